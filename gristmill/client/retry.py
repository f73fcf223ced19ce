"""How calls survive an unavailable or full server: the policy, its gRPC twin, the deadline."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc

from gristmill.client.errors import pushback_s, server_full
from gristmill.model import MAX_MESSAGE_BYTES

__all__ = ["SERVICE_CONFIG", "Deadline", "RetryPolicy"]

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": "gristmill.v1.Runtime"}],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
"""gRPC's retry policy and wait-for-ready for every method of the service, as the
service-config JSON any gRPC client takes (`grpc.service_config` in Python)."""


class Deadline:
    """The time left of a call's overall timeout, across its retries."""

    def __init__(self, timeout_s: float | None) -> None:
        self._end = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())


@dataclass(frozen=True)
class RetryPolicy:
    """How calls survive an unavailable or full server.

    `wait_for_ready`: a call waits for the server to be reachable instead of failing at
    once (bounded by its `timeout_s`). A call that fails with UNAVAILABLE is retried up
    to `max_attempts` in all, with exponential backoff and full jitter; with
    `retry_resource_exhausted` a call refused by a full server is retried too.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    wait_for_ready: bool = True
    retry_resource_exhausted: bool = False

    def pause_s(self, error: grpc.RpcError, attempt: int, deadline: Deadline) -> float | None:
        """The pause before retrying failed attempt `attempt` (1-based), or None: give up.

        A message over a size limit is RESOURCE_EXHAUSTED too, but retrying cannot help
        it: only a full server (`server_full`) is retried."""
        retryable = error.code() == grpc.StatusCode.UNAVAILABLE or (
            self.retry_resource_exhausted and server_full(error)
        )
        if not retryable or attempt >= self.max_attempts:
            return None
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        pause = pushback_s(error)
        if pause is None:
            pause = random.uniform(0, ceiling)  # full jitter: retrying workers spread out
        remaining = deadline.remaining()
        return pause if remaining is None or remaining > pause else None

    def channel_options(self) -> list[tuple[str, int | str]]:
        # gRPC's own reconnect backoff starts at 1 s; keep it in step with our retries so
        # a retry is not refused by a channel still waiting to reconnect.
        backoff_ms = int(self.initial_backoff_s * 1000)
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", int(self.max_backoff_s * 1000)),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ]
