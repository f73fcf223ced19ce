"""The Python client for queue workers: `Client` (blocking) and `AsyncClient` (asyncio).

`run` answers with a typed `Outcome` (the verdict as a `Verdict` enum, the result
decoded from JSON, stdout and stderr as text); `execute` and `execute_stream` answer
with the contract's own messages (`gristmill.v1.runtime_pb2`). A job failing is not an
exception; the service failing is a `grpc.RpcError`.

Every keyword is typed (`JobOptions`), so that a typo (`job_idd=`) fails type checking.
Every call takes `metadata=[(key, value), ...]` (a job's `traceparent`, say), sent
beside the client's own.

A call waits for the server to be ready (`wait_for_ready`), so a server being restarted
delays it rather than failing it, and a call that fails with UNAVAILABLE mid-way is
retried with backoff under the same job id, which is the server's idempotency key: a
retry joins the first attempt's run or gets its outcome, so the job never runs twice at
once (a run every caller abandoned is killed, and a later retry runs it again).
`RetryPolicy(retry_resource_exhausted=True)` also retries a full server, after the
pause the server asks for (`grpc-retry-pushback-ms`) or the policy's own backoff.
`timeout_s` is the deadline of the whole call, retries included; the server bounds the
job by it and kills the job when it passes. Without one a call may wait indefinitely
for a server that never comes back.

`SERVICE_CONFIG` is the same policy in gRPC's service-config JSON, for clients in other
languages to copy.

A server that authenticates its callers wants a bearer token or a client certificate:
`credentials=Credentials(token=..., ca_file=...)`, else what the environment says
(`GRISTMILL_TOKEN`, `GRISTMILL_TLS_CA`, ...; see `gristmill.credentials`).

The two clients are one source: `_async/client.py`, from which `_sync/client.py` is
generated (`scripts/unasync_client.py`); what they share free of I/O (the attempts of a
call) is in `transport.py`.
"""

from gristmill.client._async.client import AsyncClient
from gristmill.client._sync.client import Client
from gristmill.client.errors import (
    PUSHBACK_KEY,
    field_violations,
    quota_failures,
    server_full,
    too_large,
)
from gristmill.client.outcome import Outcome, Verdict, outcome_result
from gristmill.client.requests import (
    JobOptions,
    Limits,
    Lockfile,
    execute_request,
    resolve_request,
)
from gristmill.client.retry import SERVICE_CONFIG, RetryPolicy
from gristmill.credentials import Credentials

__all__ = [
    "PUSHBACK_KEY",
    "SERVICE_CONFIG",
    "AsyncClient",
    "Client",
    "Credentials",
    "JobOptions",
    "Limits",
    "Lockfile",
    "Outcome",
    "RetryPolicy",
    "Verdict",
    "execute_request",
    "field_violations",
    "outcome_result",
    "quota_failures",
    "resolve_request",
    "server_full",
    "too_large",
]
