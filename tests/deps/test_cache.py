"""The environment cache with a fake builder: one build per key, atomic, cleaned, evicted LRU.

The builder is a stand-in (it writes a file of a chosen size); what is under test is
the cache's locking, renaming and eviction.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gristmill.deps.cache import EnvironmentCache, OverBudget, Unsealable


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


async def test_setuid_setgid_and_sticky_bits_are_stripped_when_sealed(tmp_path):
    # Sealed, a file is owned by the service's user (root): a setuid bit the sandbox
    # set would make it a root program for anyone who can reach it.
    async def plant(target: Path) -> None:
        (target / "program").write_text("#!/bin/sh\n")
        (target / "program").chmod(0o6755)
        (target / "sticky").write_text("")
        (target / "sticky").chmod(0o1644)
        (target / "shared").mkdir()
        (target / "shared").chmod(0o3777)

    cache = EnvironmentCache(tmp_path, 1 << 30)
    async with cache.use(digest(1), plant) as lease:
        modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in lease.path.iterdir()}
    assert modes == {"program": 0o755, "sticky": 0o644, "shared": 0o755}


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    # Bound where the path fits a socket address, then moved into the environment.
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(f"{short}/s")
        Path(short, "s").rename(path)


def _device(path: Path) -> None:
    # The kernel's null device: harmless, but no environment may hold a device node.
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.mark.parametrize("make", [_fifo, _socket, _device], ids=["fifo", "socket", "device"])
async def test_a_build_that_leaves_a_special_file_is_refused_and_leaves_nothing(
    tmp_path, make: Callable[[Path], None]
):
    async def plant(target: Path) -> None:
        (target / "lib").mkdir()
        make(target / "lib" / "odd")

    cache = EnvironmentCache(tmp_path, 1 << 30)
    with pytest.raises(Unsealable, match=r"lib/odd, which is not a regular file"):
        async with cache.use(digest(1), plant):
            pass
    assert not cache.path(digest(1)).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_cache_is_searchable_but_not_listable_by_others(tmp_path):
    EnvironmentCache(tmp_path / "cache", 1 << 30)
    modes = {
        name: stat.S_IMODE((tmp_path / "cache" / name).stat().st_mode)
        for name in (".", "envs", "tmp", "locks")
    }
    assert modes == {".": 0o711, "envs": 0o711, "tmp": 0o711, "locks": 0o700}


async def test_finished_builds_leave_no_per_key_lock_behind(tmp_path):
    # One asyncio lock per key being built; kept for every key ever built, the table
    # would grow for as long as the server runs.
    cache = EnvironmentCache(tmp_path, 1 << 30)

    async def use(n: int, builder: FakeBuilder) -> None:
        async with cache.use(digest(n), builder):
            pass

    await asyncio.gather(*(use(n % 3, FakeBuilder(delay_s=0.05)) for n in range(9)))
    with pytest.raises(RuntimeError):
        await use(4, FakeBuilder(fail=True))
    assert cache._building == {}


def test_leftovers_of_a_dead_builder_are_removed_at_start(tmp_path):
    EnvironmentCache(tmp_path, 1 << 30)
    leftover = tmp_path / "tmp" / f"{digest(1)}.abc"
    leftover.mkdir()
    EnvironmentCache(tmp_path, 1 << 30)
    assert not leftover.exists()


async def test_eviction_removes_least_recently_used_first_and_never_one_in_use(tmp_path):
    # Each environment takes 16,384 bytes (three blocks of data, its "done" file counted
    # as one): two fit.
    cache = EnvironmentCache(tmp_path, max_bytes=40_000)
    for n in (1, 2):
        async with cache.use(digest(n), FakeBuilder(size=12_288)):
            pass
    os.utime(cache.path(digest(1)), (1, 1))
    os.utime(cache.path(digest(2)), (2, 2))
    # 1 is the least recently used, but a job holds it: 2 goes instead when 3 arrives.
    async with cache.use(digest(1), FakeBuilder(size=12_288)) as held:
        assert held.cached
        os.utime(held.path, (1, 1))
        async with cache.use(digest(3), FakeBuilder(size=12_288)):
            pass
        assert cache.path(digest(1)).exists()
        assert not cache.path(digest(2)).exists()
        assert cache.path(digest(3)).exists()
    # Released, 1 is the oldest again: the next build over the limit evicts it.
    os.utime(cache.path(digest(1)), (1, 1))
    async with cache.use(digest(4), FakeBuilder(size=12_288)):
        pass
    assert not cache.path(digest(1)).exists()
    assert cache.path(digest(3)).exists()
    assert cache.path(digest(4)).exists()


async def test_an_evicted_environment_is_built_again_when_needed(tmp_path):
    # Eviction runs when a build adds to the cache: the first environment, unused by
    # then, makes room for the second, and is built again when a job needs it. (Each
    # takes 8,192 bytes, its two files counted as a block each: the budget holds one.)
    cache = EnvironmentCache(tmp_path, max_bytes=10_000)
    builder = FakeBuilder()
    for n in (1, 2, 1):
        async with cache.use(digest(n), builder) as lease:
            assert not lease.cached
    assert builder.builds == 3


class Flooder:
    """Writes `count` files of `size` bytes, one at a time, until cancelled; says if it was."""

    def __init__(self, size: int, count: int) -> None:
        self.size, self.count = size, count
        self.cancelled = False

    async def __call__(self, target: Path) -> None:
        try:
            for n in range(self.count):
                (target / f"{n}").write_bytes(b"x" * self.size)
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


@pytest.mark.parametrize(
    ("size", "count"),
    [(1 << 20, 1_000_000), (0, 1_000_000)],
    ids=["big-files", "empty-files"],
)
async def test_a_build_past_the_whole_budget_is_stopped_and_nothing_is_kept(tmp_path, size, count):
    # Empty files are not free: each is counted as a block, as its inode is disk too.
    cache = EnvironmentCache(tmp_path, max_bytes=4 << 20, setting="deps.cache_max_bytes")
    flood = Flooder(size, count)
    with pytest.raises(OverBudget, match=r"more than 4194304 bytes \(deps.cache_max_bytes\)"):
        async with cache.use(digest(1), flood):
            pass
    assert flood.cancelled
    assert not cache.path(digest(1)).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    # The cache still builds what fits.
    async with cache.use(digest(2), FakeBuilder()) as lease:
        assert (lease.path / "done").read_text() == "ok"


async def test_a_build_that_ends_past_the_budget_between_two_measurements_is_not_kept(tmp_path):
    cache = EnvironmentCache(tmp_path, max_bytes=4 << 20)
    with pytest.raises(OverBudget):
        async with cache.use(digest(1), FakeBuilder(size=5 << 20)):
            pass
    assert not cache.path(digest(1)).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


class Allocator:
    """Allocates `size` bytes of disk to an empty file, as `fallocate --keep-size` does:
    its blocks are disk, its size stays 0 (RLIMIT_FSIZE does not stop it either)."""

    FALLOC_FL_KEEP_SIZE = 1

    def __init__(self, size: int) -> None:
        self.size = size

    async def __call__(self, target: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(target / "hidden", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            keep_size, size = self.FALLOC_FL_KEEP_SIZE, ctypes.c_long(self.size)
            if libc.fallocate(fd, keep_size, ctypes.c_long(0), size) != 0:
                pytest.skip(f"fallocate: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)
        (target / "done").write_text("ok")


async def test_disk_allocated_past_a_files_end_counts_against_the_budget(tmp_path):
    # The old sizes read st_size only: 64 MiB hidden this way were kept within 4 MiB.
    cache = EnvironmentCache(tmp_path, max_bytes=4 << 20, setting="deps.cache_max_bytes")
    with pytest.raises(OverBudget, match=r"more than 4194304 bytes \(deps.cache_max_bytes\)"):
        async with cache.use(digest(1), Allocator(64 << 20)):
            pass
    assert not cache.path(digest(1)).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
