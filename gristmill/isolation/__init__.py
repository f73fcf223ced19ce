"""Sandbox backends: every job runs in one, with no way to turn it off.

`open_backend` picks a backend by name; `backend.SandboxBackend` is the interface.
"""

from gristmill.isolation.backend import (
    Sandbox,
    SandboxBackend,
    SandboxExit,
    SandboxInfo,
    SandboxPlan,
    StopReason,
)
from gristmill.isolation.select import open_backend

__all__ = [
    "Sandbox",
    "SandboxBackend",
    "SandboxExit",
    "SandboxInfo",
    "SandboxPlan",
    "StopReason",
    "open_backend",
]
