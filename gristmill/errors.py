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


class GristmillError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidRequest(GristmillError):
    """The request is malformed; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message

    def __reduce__(self) -> tuple[type[InvalidRequest], tuple[str, str]]:
        """Pickled as the base kind with its field and message (it crosses processes)."""
        return InvalidRequest, (self.field, self.detail)


class UnknownLanguage(InvalidRequest):
    def __init__(self, language: str, known: list[str], field: str = "job.language") -> None:
        super().__init__(field, f"unknown language {language!r}; known: {', '.join(sorted(known))}")


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
