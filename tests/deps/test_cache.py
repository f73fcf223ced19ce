"""The environment cache with a fake builder: one build per key, atomic, cleaned, evicted LRU.

The builder is a stand-in (it writes a file of a chosen size); what is under test is
the cache's locking, renaming and eviction.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gristmill.deps.cache import EnvironmentCache


class FakeBuilder:
    """Writes `size` bytes into the environment after `delay_s`; counts its builds."""

    def __init__(self, size: int = 10, delay_s: float = 0.0, fail: bool = False) -> None:
        self.size = size
        self.delay_s = delay_s
        self.fail = fail
        self.builds = 0

    async def __call__(self, target: Path) -> None:
        self.builds += 1
        (target / "partial").write_bytes(b"x" * self.size)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("the build failed")
        (target / "done").write_text("ok")


def digest(n: int) -> str:
    return f"{n:064x}"


async def test_concurrent_users_of_a_new_key_share_one_build(tmp_path):
    cache = EnvironmentCache(tmp_path, max_bytes=1 << 30)
    builder = FakeBuilder(delay_s=0.2)

    async def use() -> bool:
        async with cache.use(digest(1), builder) as lease:
            assert (lease.path / "done").read_text() == "ok"
            return lease.cached

    cached = await asyncio.gather(*(use() for _ in range(20)))
    assert builder.builds == 1
    assert sorted(cached) == [False] + [True] * 19


async def test_two_caches_on_one_directory_build_once(tmp_path):
    # Two server processes sharing a cache dir: separate objects, separate file locks.
    first, second = EnvironmentCache(tmp_path, 1 << 30), EnvironmentCache(tmp_path, 1 << 30)
    builder = FakeBuilder(delay_s=0.2)

    async def use(cache: EnvironmentCache) -> bool:
        async with cache.use(digest(1), builder) as lease:
            return lease.cached

    assert sorted(await asyncio.gather(use(first), use(second))) == [False, True]
    assert builder.builds == 1


async def test_a_failed_build_leaves_nothing_and_the_next_user_builds_again(tmp_path):
    cache = EnvironmentCache(tmp_path, 1 << 30)
    with pytest.raises(RuntimeError, match="the build failed"):
        async with cache.use(digest(1), FakeBuilder(fail=True)):
            pass
    assert not cache.path(digest(1)).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    async with cache.use(digest(1), FakeBuilder()) as lease:
        assert not lease.cached


async def test_a_cancelled_build_leaves_nothing(tmp_path):
    cache = EnvironmentCache(tmp_path, 1 << 30)

    async def use() -> None:
        async with cache.use(digest(1), FakeBuilder(delay_s=30)):
            pass

    task = asyncio.ensure_future(use())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not cache.path(digest(1)).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_an_environment_is_sealed_read_only_to_others(tmp_path):
    cache = EnvironmentCache(tmp_path, 1 << 30)
    async with cache.use(digest(1), FakeBuilder()) as lease:
        mode = (lease.path / "done").stat().st_mode
        assert mode & 0o022 == 0
        assert mode & 0o004
        assert lease.path.stat().st_uid == os.geteuid()


def test_leftovers_of_a_dead_builder_are_removed_at_start(tmp_path):
    EnvironmentCache(tmp_path, 1 << 30)
    leftover = tmp_path / "tmp" / f"{digest(1)}.abc"
    leftover.mkdir()
    EnvironmentCache(tmp_path, 1 << 30)
    assert not leftover.exists()


async def test_eviction_removes_least_recently_used_first_and_never_one_in_use(tmp_path):
    cache = EnvironmentCache(tmp_path, max_bytes=2500)
    for n in (1, 2):
        async with cache.use(digest(n), FakeBuilder(size=1000)):
            pass
    os.utime(cache.path(digest(1)), (1, 1))
    os.utime(cache.path(digest(2)), (2, 2))
    # 1 is the least recently used, but a job holds it: 2 goes instead when 3 arrives.
    async with cache.use(digest(1), FakeBuilder(size=1000)) as held:
        assert held.cached
        os.utime(held.path, (1, 1))
        async with cache.use(digest(3), FakeBuilder(size=1000)):
            pass
        assert cache.path(digest(1)).exists()
        assert not cache.path(digest(2)).exists()
        assert cache.path(digest(3)).exists()
    # Released, 1 is the oldest again: the next build over the limit evicts it.
    os.utime(cache.path(digest(1)), (1, 1))
    async with cache.use(digest(4), FakeBuilder(size=1000)):
        pass
    assert not cache.path(digest(1)).exists()
    assert cache.path(digest(3)).exists()
    assert cache.path(digest(4)).exists()


async def test_an_evicted_environment_is_built_again_when_needed(tmp_path):
    # Eviction runs when a build adds to the cache: the first environment, unused by
    # then, makes room for the second, and is built again when a job needs it.
    cache = EnvironmentCache(tmp_path, max_bytes=0)
    builder = FakeBuilder()
    for n in (1, 2, 1):
        async with cache.use(digest(n), builder) as lease:
            assert not lease.cached
    assert builder.builds == 3
