"""Sandbox backends: every job runs in one, with no way to turn it off.

`backend.SandboxBackend` is the interface; `open_backend` (from `select`) picks
one by name. This package imports nothing eagerly, because the fork server
(`forkserver.py`) lives here and every module it imports is copied into each
fork, costing every job time.
"""

from typing import Any

__all__ = ["open_backend"]


def __getattr__(name: str) -> Any:
    if name == "open_backend":
        from gristmill.isolation.select import open_backend

        return open_backend
    raise AttributeError(name)
