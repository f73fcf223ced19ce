"""Work that grows with what a job sends or returns, kept off the server's event loop.

The event loop serves every client. Reading a 16 MiB result or inferring the
dependencies of a megabyte of code holds it (and the interpreter lock: a thread would
not help) for seconds, and every other job waits that long. Small inputs, the usual
case and the hot path of every job, are handled in place; larger ones in a worker
process, whose time and memory are not the service's. Workers are replaced after
`TASKS_PER_WORKER` calls, so that what a pathological input made them allocate goes
back to the system.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gristmill.languages.registry import Registry, Runtime

__all__ = ["INLINE_BYTES", "Offload"]

_T = TypeVar("_T")

INLINE_BYTES = 256 * 1024
"""Inputs up to this size are handled in place: a worker's round trip would cost more."""
WORKERS = 2
TASKS_PER_WORKER = 32


@functools.cache
def _registry(runtimes_dir: Path, profiles_dir: Path) -> Registry:
    """The worker's own registry (loaded once per worker process)."""
    return Registry(runtimes_dir, profiles_dir)


def _plugin_call(
    runtimes_dir: Path, profiles_dir: Path, language: str, method: str, args: tuple[Any, ...]
) -> Any:
    """In a worker: `method` of `language`'s plugin called with `args`."""
    runtime = next(r for r in _registry(runtimes_dir, profiles_dir) if r.name == language)
    return getattr(runtime.plugin, method)(*args)


class Offload:
    """Runs a function in place or in a worker process, by the size of its input."""

    def __init__(
        self, runtimes_dir: Path, profiles_dir: Path, inline_bytes: int = INLINE_BYTES
    ) -> None:
        self._dirs = (runtimes_dir, profiles_dir)
        self.inline_bytes = inline_bytes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _workers(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the server is threaded (gRPC), and a fork of it would copy its locks.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                WORKERS,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=TASKS_PER_WORKER,
            )
        return self._pool

    async def call(self, size: int, function: Callable[..., _T], *args: Any) -> _T:
        """`function(*args)`, in a worker when `size` (bytes of input) is over the threshold.

        `function` must be a module-level function whose arguments and value pickle.
        """
        if size <= self.inline_bytes:
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers(), function, *args)

    async def plugin_call(self, runtime: Runtime, method: str, size: int, *args: Any) -> Any:
        """`runtime.plugin.<method>(*args)`, in a worker when `size` is over the threshold
        (on a thread of the service for a plugin that is not `offloaded`)."""
        call = getattr(runtime.plugin, method)
        if size <= self.inline_bytes:
            return call(*args)
        if not runtime.plugin.offloaded:
            return await asyncio.to_thread(call, *args)
        return await self.call(size, _plugin_call, *self._dirs, runtime.name, method, args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
