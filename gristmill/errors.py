"""The service's own failures, as one hierarchy translated once at the gRPC boundary.

A user's program failing is never one of these: that is an Outcome with a verdict.

    GristmillError
    ├── InvalidRequest          → INVALID_ARGUMENT (names the field)
    │   ├── UnknownLanguage
    │   └── LimitTooHigh
    ├── Overloaded              → RESOURCE_EXHAUSTED (the server's or a tenant's quota)
    ├── ShuttingDown            → UNAVAILABLE (draining: no new jobs)
    ├── LanguageUnavailable     → FAILED_PRECONDITION
    ├── NotFound                → NOT_FOUND
    └── SandboxFailure          → INTERNAL (the sandbox could not be set up)
"""

from __future__ import annotations

MAX_QUOTED_CHARS = 48
"""The most of a request's value an error quotes: enough to recognise it."""
MAX_FIELD_BYTES = 128
MAX_DETAIL_BYTES = 448
"""What an `InvalidRequest` keeps of its field and of its message, however they were
built. The error travels in the call's trailers, its text three times (grpc-message, and
in grpc-status-details-bin the Status's message and its BadRequest violation), and a
gRPC client refuses trailers past 8 KiB with RESOURCE_EXHAUSTED, which reads as "server
full" and is retried: bounded so, they stay under 2 KiB."""


def quoted(value: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """`value` as an error quotes it: its repr, of at most `limit` of its characters
    (followed by "... (N bytes)" when cut), since the value may be as long as a request."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value.encode('utf-8', 'surrogatepass'))} bytes)"


def _bounded(text: str, limit: int) -> str:
    """`text` cut to at most about `limit` bytes of UTF-8, saying how long it was."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode("utf-8", "ignore")
    return f"{kept}... ({len(encoded)} bytes)"


class GristmillError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidRequest(GristmillError):
    """The request is malformed; `field` names the culprit. Both are bounded (a value
    they quote should be cut by `quoted` already; this is what holds if one was not)."""

    def __init__(self, field: str, message: str) -> None:
        field, message = _bounded(field, MAX_FIELD_BYTES), _bounded(message, MAX_DETAIL_BYTES)
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message

    def __reduce__(self) -> tuple[type[InvalidRequest], tuple[str, str]]:
        """Pickled as the base kind with its field and message (it crosses processes)."""
        return InvalidRequest, (self.field, self.detail)


class UnknownLanguage(InvalidRequest):
    def __init__(self, language: str, known: list[str], field: str = "job.language") -> None:
        super().__init__(
            field, f"unknown language {quoted(language)}; known: {', '.join(sorted(known))}"
        )


class LimitTooHigh(InvalidRequest):
    def __init__(self, field: str, asked: int, maximum: int) -> None:
        super().__init__(f"job.limits.{field}", f"{asked} is over this server's maximum {maximum}")


class Overloaded(GristmillError):
    """Every job slot and queue place is taken: the server's (`subject` "server"), or a
    tenant's own (`subject` "tenant:NAME")."""

    def __init__(self, message: str, subject: str = "server") -> None:
        super().__init__(message)
        self.subject = subject


class ShuttingDown(GristmillError):
    """The server is draining: it takes no new job (UNAVAILABLE: try another)."""


class LanguageUnavailable(GristmillError):
    """The language is known but its toolchain is missing on this server."""


class NotFound(GristmillError):
    """No such job."""


class SandboxFailure(GristmillError):
    """The sandbox could not be created; the job never ran."""
