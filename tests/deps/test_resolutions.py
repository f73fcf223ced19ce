"""Remembered resolutions: reused within their time, resolved once under concurrency,
never remembered when they failed."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from gristmill.deps.resolutions import ResolutionKey, Resolutions
from gristmill.model import Lockfile

KEY = ResolutionKey("python", "Python 3.11.2", "uv", "uv 0.13.8", (), False, ("pyyaml",))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Resolver:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def __call__(self) -> Lockfile:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("registry unreachable")
        return Lockfile("python", "requirements.txt", f"pyyaml==6.0.{self.calls}\n")


async def test_a_resolution_is_reused_until_it_expires():
    clock, resolve = Clock(), Resolver()
    resolutions = Resolutions(60, clock)
    first, remembered = await resolutions.get(KEY, resolve)
    assert not remembered
    assert await resolutions.get(KEY, resolve) == (first, True)
    clock.now = 61
    renewed, remembered = await resolutions.get(KEY, resolve)
    assert not remembered
    assert renewed != first
    assert resolve.calls == 2


async def test_other_requirements_resolve_on_their_own():
    resolutions, resolve = Resolutions(60), Resolver()
    await resolutions.get(KEY, resolve)
    await resolutions.get(dataclasses.replace(KEY, requirements=("requests",)), resolve)
    await resolutions.get(dataclasses.replace(KEY, resolver_version="uv 0.14"), resolve)
    assert resolve.calls == 3


async def test_concurrent_jobs_with_the_same_requirements_resolve_once():
    resolutions, resolve = Resolutions(60), Resolver()
    results = await asyncio.gather(*(resolutions.get(KEY, resolve) for _ in range(10)))
    assert resolve.calls == 1
    assert len({lockfile for lockfile, _ in results}) == 1


async def test_a_failed_resolution_is_not_remembered():
    resolutions, failing = Resolutions(60), Resolver(fail=True)
    with pytest.raises(RuntimeError):
        await resolutions.get(KEY, failing)
    resolve = Resolver()
    _, remembered = await resolutions.get(KEY, resolve)
    assert not remembered
    assert resolve.calls == 1


async def test_a_time_of_zero_remembers_nothing():
    resolutions, resolve = Resolutions(0), Resolver()
    await resolutions.get(KEY, resolve)
    await resolutions.get(KEY, resolve)
    assert resolve.calls == 2
