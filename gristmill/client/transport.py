"""What the two clients share on the wire, free of I/O: one call's attempts.

The asyncio client (`_async/client.py`) is the source and the blocking one is generated
from it, so each retry or deadline decision is made here once, for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from gristmill.client.retry import Deadline, RetryPolicy

__all__ = ["AsyncChannel", "Attempts", "Metadata", "SyncChannel"]

SyncChannel = grpc.Channel
AsyncChannel = grpc.aio.Channel
"""The channel each client takes (named so that generating the blocking client maps one
to the other)."""

Metadata = Sequence[tuple[str, str]]


class Attempts:
    """One call's attempts: the gRPC options of each, and whether to retry a failure.

    `metadata` is the call's own, sent after the client's (its token)."""

    def __init__(
        self,
        retry: RetryPolicy,
        timeout_s: float | None,
        client_metadata: Metadata,
        metadata: Metadata | None,
    ) -> None:
        self._retry = retry
        self._deadline = Deadline(timeout_s)
        self._metadata = (*client_metadata, *(metadata or ()))
        self._attempt = 1

    def options(self) -> dict[str, Any]:
        """The keywords of the next attempt's stub call."""
        return {
            "timeout": self._deadline.remaining(),
            "wait_for_ready": self._retry.wait_for_ready,
            "metadata": self._metadata,
        }

    def pause_s(self, error: grpc.RpcError) -> float | None:
        """How long to wait before the next attempt after `error`, or None: give up."""
        pause = self._retry.pause_s(error, self._attempt, self._deadline)
        self._attempt += 1
        return pause
