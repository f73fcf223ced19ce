"""The blocking client, generated from `_async/` (never edit it by hand)."""
