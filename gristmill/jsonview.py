"""The one JSON shape every `gristmill ... --json` prints: a contract message as plain JSON.

Field names are the .proto's own (snake_case); every field is present, zero or not
(an unset error, lockfile, environment or build is `null`); numbers are JSON numbers
(protobuf's JSON mapping prints 64-bit integers as strings); enums are their names;
a `*_json` text field is replaced by its value parsed (`result_json` becomes
`result`); bytes are text when they are UTF-8, else `{"base64": ...}`. A failed
command prints `{"failure": {"code": ..., "message": ..., "hint": ...}}`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["failure", "to_json"]

JSON_SUFFIX = "_json"
OPTIONAL_MESSAGES = frozenset({"error", "lockfile", "environment", "build", "args", "outcome"})
"""Message fields whose absence means something (no error, no lockfile): `null` when
unset. Every other message field is printed, all zeros when unset."""


def _bytes(data: bytes) -> Any:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _scalar(field: Any, value: Any) -> Any:
    """`field` is a FieldDescriptor (its Python and upb classes differ in typing)."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number
        return known[value].name if value in known else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _bytes(value)
    return value


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            return {key: _value(value_field, item) for key, item in value.items()}
        return to_json(value)
    return _scalar(field, value)


def to_json(message: Message) -> dict[str, Any]:
    """`message` as a JSON object of the shape above."""
    out: dict[str, Any] = {}
    field: Any
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        repeated = field.is_repeated
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = _value(field, value)
        elif repeated:
            out[field.name] = [_value(field, item) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            present = message.HasField(field.name) or field.name not in OPTIONAL_MESSAGES
            out[field.name] = to_json(value) if present else None
        elif field.type == FieldDescriptor.TYPE_STRING and field.name.endswith(JSON_SUFFIX):
            out[field.name.removesuffix(JSON_SUFFIX)] = json.loads(value) if value else None
        else:
            out[field.name] = _scalar(field, value)
    return out


def failure(code: str, message: str, hint: str = "") -> dict[str, Any]:
    """What a failed command prints with `--json`: the gRPC status name (or USAGE)."""
    return {"failure": {"code": code, "message": message, "hint": hint}}
