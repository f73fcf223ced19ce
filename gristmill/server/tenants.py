"""Tenants: who a call is on behalf of, and that tenant's share of the server.

A tenant is a bearer token's name or a client certificate's common name
(`gristmill.server.access` decides which); with no authentication configured every
call is `anonymous`. The tenant of the call being served is `current_tenant`, a
context variable: it is set before any handler runs and is inherited by the tasks the
handler starts (a job's run), so that logs, metrics and traces can read it anywhere.
"""

from __future__ import annotations

import contextvars
import dataclasses
from dataclasses import dataclass

from gristmill.config import ANONYMOUS, ConfigError, ServerConfig, TenantConfig
from gristmill.model import Limits
from gristmill.server.admission import Quota

__all__ = ["ANONYMOUS", "Tenant", "Tenants", "current_tenant"]


@dataclass(frozen=True)
class Tenant:
    """A tenant with its settings resolved against the server's."""

    name: str
    operator: bool
    quota: Quota
    # The largest limits its jobs may ask for; its jobs' defaults are the server's.
    max_limits: Limits


current_tenant: contextvars.ContextVar[Tenant] = contextvars.ContextVar("gristmill_tenant")
"""The tenant of the call being served (unset outside a call)."""


class Tenants:
    """Every tenant's resolved settings, by name; a name not configured gets
    `tenant_defaults`."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._named = {name: self._resolve(name, own) for name, own in config.tenants.items()}
        self._default = config.tenant_defaults
        self._resolve("tenant_defaults", self._default)  # its errors at start, not first call

    def get(self, name: str) -> Tenant:
        return self._named.get(name) or self._resolve(name, self._default)

    def _resolve(self, name: str, own: TenantConfig) -> Tenant:
        config = self._config
        running = own.max_concurrent_jobs or config.max_concurrent_jobs
        queued = own.max_queued_jobs
        if queued is None:
            queued = 4 * running if own.max_concurrent_jobs else config.queue_capacity
        max_limits = dataclasses.replace(config.max_limits, **own.max_limits)
        setting = f"tenants.{name}" if name in config.tenants else "tenant_defaults"
        for limit in dataclasses.fields(Limits):
            default = getattr(config.default_limits, limit.name)
            if default > getattr(max_limits, limit.name):
                raise ConfigError(
                    f"{setting}.max_limits.{limit.name} is under default_limits."
                    f"{limit.name} ({default}): its jobs' defaults would be refused"
                )
        return Tenant(name, own.operator, Quota(name, running, queued), max_limits)
