"""Placeholder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def schema(code: str, entry_point: str) -> Mapping[str, Any]:
    return {"type": "object", "properties": {}, "required": []}
