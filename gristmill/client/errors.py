"""What a failed call's status details say: a full server, a quota, a bad field, a pause.

A job failing is an `Outcome`; the service failing is a `grpc.RpcError`, whose trailing
metadata carries a `google.rpc.Status` with typed details, read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "PUSHBACK_KEY",
    "field_violations",
    "pushback_s",
    "quota_failures",
    "server_full",
    "too_large",
]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""Trailing metadata holding a `google.rpc.Status` with the error's details."""

PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata by which a server says how long to wait before retrying (gRPC's own)."""


def server_full(error: grpc.RpcError) -> bool:
    """Whether a RESOURCE_EXHAUSTED came from a full server or a full tenant quota (it
    carries a `google.rpc.QuotaFailure`, whose subject says whose: "server" or
    "tenant:NAME", or a pushback), as opposed to a message over a size limit
    (`too_large`), which gRPC itself reports with the same code."""
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    return bool(quota_failures(error)) or pushback_s(error) is not None


def quota_failures(error: grpc.RpcError) -> list[error_details_pb2.QuotaFailure.Violation]:
    """The quota violations a RESOURCE_EXHAUSTED error names (empty when none)."""
    return [
        violation
        for detail in _details(error)
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR)
        for violation in _unpacked(detail, error_details_pb2.QuotaFailure()).violations
    ]


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """An INVALID_ARGUMENT error's fields (`job.limits.memory_bytes`, ...) and what is
    wrong with each, from its `google.rpc.BadRequest` details."""
    return {
        violation.field: violation.description
        for detail in _details(error)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
        for violation in _unpacked(detail, error_details_pb2.BadRequest()).field_violations
    }


def too_large(error: grpc.RpcError) -> bool:
    """Whether a call failed because a message (the outcome, say) was over a side's
    message size limit: raise the limit (`grpc.max_receive_message_length`), or send
    less; waiting will not help."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not server_full(error)


def pushback_s(error: grpc.RpcError) -> float | None:
    """The pause the server asked for in its trailing metadata, if it did."""
    for key, value in _trailing(error):
        if key == PUSHBACK_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


_M = TypeVar("_M", bound=Message)


def _unpacked(detail: any_pb2.Any, into: _M) -> _M:
    detail.Unpack(into)
    return into


def _trailing(error: grpc.RpcError) -> Sequence[tuple[str, str | bytes]]:
    """The error's trailing metadata (none for an error made on the client's side)."""
    trailing = getattr(error, "trailing_metadata", None)
    try:
        return tuple(trailing() or ()) if callable(trailing) else ()
    except Exception:  # an aio error before any metadata arrived
        return ()


def _details(error: grpc.RpcError) -> list[any_pb2.Any]:
    for key, value in _trailing(error):
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []
