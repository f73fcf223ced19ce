"""One server's telemetry, made from `TelemetryConfig`: a watch per job, the call
interceptor for traces, the metrics endpoint; closed with the server."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from gristmill.config import TelemetryConfig
from gristmill.model import Job
from gristmill.observability.jobs import JobWatch, ReportedJob
from gristmill.observability.metrics import (
    Admission,
    MetricsEndpoint,
    ServerState,
    WarmSandboxes,
)
from gristmill.observability.tracing import Tracing

__all__ = ["Telemetry"]

log = logging.getLogger("gristmill.server")


class Telemetry:
    """`tracing` replaces the OTLP exporter the config names (tests: an in-memory one)."""

    def __init__(self, config: TelemetryConfig, tracing: Tracing | None = None) -> None:
        self.config = config
        if tracing is None and config.otlp_endpoint:
            tracing = Tracing.otlp(config.otlp_endpoint, config.service_name)
        self.tracing = tracing
        self.metrics: MetricsEndpoint | None = None

    def watch(self, job: Job) -> JobWatch:
        return ReportedJob(job, bool(self.config.metrics_address), self.tracing)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [self.tracing.interceptor()] if self.tracing is not None else []

    def serve_metrics(
        self, admission: Admission, pool: WarmSandboxes | None, languages: Sequence[str]
    ) -> None:
        """Starts the metrics endpoint, if one is configured."""
        if self.config.metrics_address:
            state = ServerState(admission, pool, languages)
            self.metrics = MetricsEndpoint(self.config.metrics_address, state)

    def describe(self) -> dict[str, str]:
        """What is on, for the server's start-up line."""
        return {
            "metrics": self.metrics.address if self.metrics else "off",
            "tracing": self.config.otlp_endpoint or ("on" if self.tracing else "off"),
        }

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.tracing is not None:
            self.tracing.close()
