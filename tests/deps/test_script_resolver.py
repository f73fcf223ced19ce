"""A resolver may bring its program as a file of each step (run by an interpreter the
sandbox has in /usr) rather than name host programs to copy: it declares none."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from gristmill.config import DependencyConfig
from gristmill.deps.manager import DependencyManager
from gristmill.isolation.backend import SandboxBackend
from gristmill.offload import Offload


class ScriptedTool:
    name = "scripted"
    lock_format = "scripted.lock"
    programs: tuple[str, ...] = ()

    def version_argv(self, program_path: str) -> Sequence[str]:
        return (sys.executable, "-c", f"print('scripted 1', {program_path!r})")


def test_a_resolver_without_host_programs_gets_its_version_and_an_empty_tools_dir(
    tmp_path: Path,
) -> None:
    config = DependencyConfig(cache_dir=tmp_path / "deps")
    offload = Offload(tmp_path, tmp_path)
    manager = DependencyManager(cast(SandboxBackend, None), tmp_path / "work", config, offload)
    manager._install(ScriptedTool())  # type: ignore[arg-type]
    runner = manager._runner(ScriptedTool(), "", os.getuid(), os.getgid())  # type: ignore[arg-type]
    tools = runner.paths.tools_dir
    assert tools.is_dir() and list(tools.iterdir()) == []
    assert manager._versions["scripted"] == f"scripted 1 {tools}"
