"""The asyncio client: the source the blocking client (`_sync/`) is generated from."""
