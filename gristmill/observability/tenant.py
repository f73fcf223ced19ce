"""Whose request this is, for logs and metrics: one context variable, read at submission.

Authentication sets it for the duration of a call (`TENANT.set(name)` in the
interceptor that checks the caller); a job keeps the tenant of the call that submitted
it. Without authentication every call is the default tenant's.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["DEFAULT_TENANT", "TENANT", "current_tenant"]

DEFAULT_TENANT = "default"

TENANT: ContextVar[str] = ContextVar("gristmill_tenant", default=DEFAULT_TENANT)


def current_tenant() -> str:
    """The tenant of the call being served (`DEFAULT_TENANT` when none was named)."""
    return TENANT.get()
