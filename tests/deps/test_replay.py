"""A lockfile from one server replays the same versions on another with empty caches.

Its own module, with servers one after the other: two servers alive at once in one
process would share the sandbox backend's per-process cgroup.
"""

from __future__ import annotations

from gristmill.client import Client, outcome_result
from gristmill.v1 import runtime_pb2 as pb
from tests.deps.test_end_to_end import REQUESTS_JOB, TIMEOUT_S, serve


def run_once(code: str, lockfile: pb.Lockfile | None = None) -> pb.Outcome:
    for address in serve():
        with Client(address) as client:
            return client.execute("python", code, lockfile=lockfile, timeout_s=TIMEOUT_S)
    raise AssertionError("no server")


def test_a_lockfile_replays_the_same_versions_on_a_fresh_cache():
    first = run_once(REQUESTS_JOB.replace('"requests"', '"requests==2.31.0"'))
    assert outcome_result(first) == "2.31.0", first
    # The code alone would resolve the newest requests: its lockfile must win.
    replay = run_once(REQUESTS_JOB, lockfile=first.lockfile)
    assert replay.verdict == pb.SUCCESS, replay
    assert outcome_result(replay) == "2.31.0"
    assert not replay.environment.cached
    assert replay.usage.phases.resolve_ms == 0
    assert replay.environment.key == first.environment.key
