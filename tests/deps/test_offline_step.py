"""`Step.then_offline`: the follow-up of an install runs in a sandbox of its own, without
the network and without the shared download cache, the environment still writable.

Real sandbox (process backend), real ToolRunner; a default route stands for "the
network": the install step has one (its own namespace's way out to the registries), its
follow-up must have none.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from gristmill.deps.sandboxed import ToolPaths, ToolRunner
from gristmill.errors import SandboxFailure
from gristmill.isolation.layout import JAIL_BUILD_DIR, JAIL_TOOL_CACHE_DIR
from gristmill.isolation.profile import SandboxProfile, load_profile
from gristmill.isolation.select import open_backend
from gristmill.languages.registry import REPO_ROOT
from gristmill.languages.resolver import Step
from gristmill.model import Limits

LIMITS = Limits(
    wall_time_ms=20000,
    memory_bytes=256 << 20,
    cpu_time_ms=20000,
    processes=32,
    output_bytes=1 << 20,
)
PROBE = """\
net=refused
while read -r _ destination _; do
    if [ "$destination" = 00000000 ]; then net=reached; fi
done < /proc/net/route
if [ -d {cache} ]; then cache=mounted; else cache=absent; fi
echo "$net $cache" > {build}/{name}
"""


def step(name: str) -> Step:
    script = PROBE.format(cache=JAIL_TOOL_CACHE_DIR, build=JAIL_BUILD_DIR, name=name)
    return Step(argv=("/bin/bash", "probe.sh"), files={"probe.sh": script})


def test_the_offline_follow_up_has_no_network_and_no_download_cache() -> None:
    base = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        try:
            backend = open_backend("process", base)
        except SandboxFailure as unusable:
            pytest.skip(f"process backend: {unusable}")
        profile: SandboxProfile = load_profile(REPO_ROOT / "sandbox" / "profiles", "bash")
        paths = ToolPaths(base / "tools", base / "cache", base / "runs")
        for directory in (paths.tools_dir, paths.cache_dir, paths.work_dir):
            directory.mkdir(mode=0o777)
            directory.chmod(0o777)
        environment = base / "environment"
        environment.mkdir(mode=0o777)
        environment.chmod(0o777)
        runner = ToolRunner(backend, paths, LIMITS, cache_max_bytes=1 << 30)
        install = step("install")
        install = Step(install.argv, install.files, then_offline=step("offline"))
        asyncio.run(runner.run(install, profile, lambda _line: None, environment))
        assert (environment / "install").read_text().split() == ["reached", "mounted"]
        assert (environment / "offline").read_text().split() == ["refused", "absent"]
        asyncio.run(backend.close())
    finally:
        shutil.rmtree(base, ignore_errors=True)
