"""A job thrashing at its memory limit is told apart from one merely using its memory:
the compiled supervisor's rule (`thrashing_at_memory_limit` in `nsjail_supervisor.c`),
polled through its harness over memory files written here."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.isolation.harness import harness

LIMIT = 128 << 20
POLL_NS = 20_000_000
GRACE_NS = 500_000_000
"""The supervisor's MEMORY_GRACE_NS: a job thrashing this long is stopped."""
EPISODE_NS = 1_000_000_000
"""Its MEMORY_EPISODE_NS: refaults further apart are separate episodes."""


class Watch:
    """One supervisor's view of a group: a poll of its rule per `stuck(now)`."""

    def __init__(self, usage: Path, limit: Path, stat: Path) -> None:
        self._process = subprocess.Popen(
            [harness(), "thrash", str(usage), str(limit), str(stat)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def stuck(self, now: int) -> bool:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(f"{now}\n")
        self._process.stdin.flush()
        return self._process.stdout.readline().strip() == "1"

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        assert self._process.wait(60) == 0


WATCHES: list[Watch] = []


@pytest.fixture(autouse=True)
def _closed_watches() -> Iterator[None]:
    yield
    while WATCHES:
        WATCHES.pop().close()


class Group:
    """A memory group's files, as v1 or v2 writes them."""

    def __init__(self, folder: Path, v2: bool) -> None:
        self.usage, self.limit, self.stat = (folder / n for n in ("usage", "limit", "stat"))
        self.v2 = v2
        self.limit.write_text(f"{LIMIT}\n")
        self.set(usage=0, anonymous=0, refaults=0)

    def set(self, usage: int, anonymous: int, refaults: int, shmem: int = 0) -> None:
        self.usage.write_text(f"{usage}\n")
        anon = "anon" if self.v2 else "rss"
        noise = "anon_thp 0\n" if self.v2 else "total_rss 999999999999\nrss_huge 0\n"
        self.stat.write_text(
            f"{anon} {anonymous}\n{noise}shmem {shmem}\n"
            f"workingset_refault_anon 0\nworkingset_refault_file {refaults}\n"
        )

    def watch(self) -> Watch:
        WATCHES.append(Watch(self.usage, self.limit, self.stat))
        return WATCHES[-1]


def _polls(group: Group, watch: Watch, anonymous: int, shmem: int = 0) -> int | None:
    """Polls a group at its limit whose refaults keep rising; the poll that stops it."""
    for poll in range(1, 100):
        group.set(LIMIT, anonymous, refaults=poll * 1000, shmem=shmem)
        if watch.stuck(poll * POLL_NS):
            return poll
    return None


def test_thrashing_with_anonymous_memory_filling_the_limit_is_stopped_after_the_grace(
    tmp_path: Path,
) -> None:
    for v2 in (False, True):
        (tmp_path / str(v2)).mkdir()
        group = Group(tmp_path / str(v2), v2)
        stopped = _polls(group, group.watch(), anonymous=LIMIT - (2 << 20))
        assert stopped is not None
        # The first poll is the baseline; the grace counts from the first rise.
        assert (stopped - 2) * POLL_NS >= GRACE_NS
        assert (stopped - 3) * POLL_NS < GRACE_NS


def test_tmpfs_memory_counts_as_unreclaimable(tmp_path: Path) -> None:
    group = Group(tmp_path, v2=True)
    assert _polls(group, group.watch(), anonymous=64 << 20, shmem=63 << 20) is not None


def test_refaults_with_room_for_files_are_let_run(tmp_path: Path) -> None:
    group = Group(tmp_path, v2=False)
    assert _polls(group, group.watch(), anonymous=LIMIT - LIMIT // 8) is None


def test_a_group_under_its_limit_is_let_run(tmp_path: Path) -> None:
    group = Group(tmp_path, v2=False)
    watch = group.watch()
    for poll in range(1, 100):
        group.set(LIMIT - LIMIT // 8, LIMIT - LIMIT // 8, refaults=poll * 1000)
        assert not watch.stuck(poll * POLL_NS)


def test_no_refaults_at_the_limit_is_let_run(tmp_path: Path) -> None:
    group = Group(tmp_path, v2=True)
    watch = group.watch()
    for poll in range(1, 100):
        group.set(LIMIT, LIMIT - (2 << 20), refaults=5)
        assert not watch.stuck(poll * POLL_NS)


def test_a_pause_longer_than_an_episode_starts_the_grace_again(tmp_path: Path) -> None:
    group = Group(tmp_path, v2=True)
    watch = group.watch()
    now, refaults = 0, 0

    def thrash(polls: int) -> bool:
        nonlocal now, refaults
        stuck = False
        for _ in range(polls):
            now, refaults = now + POLL_NS, refaults + 1000
            group.set(LIMIT, LIMIT - (2 << 20), refaults)
            stuck = watch.stuck(now)
        return stuck

    almost = GRACE_NS // POLL_NS - 1
    for _ in range(3):
        assert not thrash(almost)
        now += EPISODE_NS + POLL_NS
    assert not thrash(almost)
    assert thrash(2)


def test_polls_without_a_new_refault_do_not_end_an_episode_but_room_does(tmp_path: Path) -> None:
    group = Group(tmp_path, v2=False)
    watch = group.watch()
    full = LIMIT - (2 << 20)
    group.set(LIMIT, full, refaults=1)
    assert not watch.stuck(POLL_NS)  # the baseline
    group.set(LIMIT, full, refaults=2)
    assert not watch.stuck(2 * POLL_NS)  # the episode starts
    # A late poll that finds no new refault, and usage wavering just under the limit.
    group.set(LIMIT - (4 << 20), full, refaults=2)
    assert not watch.stuck(2 * POLL_NS + GRACE_NS // 2)
    group.set(LIMIT, full, refaults=3)
    assert watch.stuck(2 * POLL_NS + GRACE_NS)
    # Room: the job freed its memory; the next refault starts a new grace.
    group.set(LIMIT, LIMIT // 2, refaults=4)
    assert not watch.stuck(3 * POLL_NS + GRACE_NS)
    group.set(LIMIT, full, refaults=5)
    assert not watch.stuck(4 * POLL_NS + GRACE_NS)
    group.set(LIMIT, full, refaults=6)
    assert not watch.stuck(5 * POLL_NS + GRACE_NS)
