"""Logs, metrics and traces: what an operator sees of the service.

- `logs`: structured log lines (JSON, logfmt, or a console form), secrets masked;
- `metrics`: Prometheus counters and histograms, and each server's state at scrape time;
- `tracing`: OpenTelemetry spans per call, job and phase, continuing the caller's trace;
- `jobs`: the watch the job table keeps per job, which feeds all three;
- `telemetry`: one server's set of them, from its configuration.

Wired into the server by one interceptor (traces) and the job table's watch, and into
the caches, the resolver, the builds and the warm pool by one counter call each. A job
is logged and counted under its tenant (`Job.tenant`, set by authentication).
"""

from gristmill.observability.jobs import JobWatch
from gristmill.observability.telemetry import Telemetry

__all__ = ["JobWatch", "Telemetry"]
