"""The compiled supervisor's parsers, under ASan and UBSan: what a job (its commands'
channel is the service's, but its status, its nsjail's log and its cgroup's files are
the job's doing) can make them read breaks neither memory nor the report's JSON."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.isolation.harness import harness

CORPUS = {
    "control": b"go 100 200 300\ncancel\n  wall_time \r\ngo x\ngo 1 2 3 4\n\n",
    "status": (
        b"running 123\nerror cannot start /x: \xff bad\nend 256 1000 2000 4096\nend 1 2\n"
        b"end 99999999999999999999 -1 0 0\n" + b"e" * 5000 + b"\n"
    ),
    "log": (
        b"[I][2026] Mode: STANDALONE_ONCE\n[E][2026][1] f():1 Failed \xf8\x80 here\n"
        b"[I][2026] pid=2 ([STANDALONE MODE]) exited with status: 3, (PIDs left: 0)\n"
        b'\xed\xa0\x80\xf4\x90\x80\x80\xe0\x80\x80\xc0\xaf\x7f\x00\x1f"\\'
    ),
    "netdev": (
        b"Inter-|   Receive\n face |bytes    packets\n    lo: 0 0 0 0 0 0 0 0 0 0\n"
        b"  tap0: 1234 5 0 0 0 0 0 0 5678 6 0 0\n  tap0: 1 2\ntap0:"
    ),
    "keyed": b"usage_usec 123\nuser_usec 100\nanon 5\nworkingset_refault_file 9\nmax 3\nmax",
}


@pytest.mark.attack("supervisor: parsers")
def test_the_supervisors_parsers_hold_under_sanitizers_for_a_mutated_corpus(
    tmp_path: Path,
) -> None:
    """A deterministic corpus run: the seeds, then 2,000 inputs mutated from them (the
    same every run: a failure names its round)."""
    for name, content in CORPUS.items():
        (tmp_path / name).write_bytes(content)
    files = [str(tmp_path / name) for name in CORPUS]
    ran = subprocess.run(
        [harness(), "fuzz", "29", "2000", *files], capture_output=True, text=True, timeout=600
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().endswith(f"fed {2000 + len(CORPUS)} inputs, 0 broken")
