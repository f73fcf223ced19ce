"""The `nsjail` backend: the process backend's supervisor, cgroup and accounting, with
the jail built by nsjail from the same profile (`nsjail.render_argv`)."""

from __future__ import annotations

import dataclasses

from gristmill.isolation.backend import SandboxPlan
from gristmill.isolation.cgroups import Cgroups, JobCgroup
from gristmill.isolation.jail import JailSpec
from gristmill.isolation.nsjail import render_argv
from gristmill.isolation.process_backend import ProcessBackend


class NsjailBackend(ProcessBackend):
    """Jails built by the nsjail binary at `nsjail`, supervised like the process backend's."""

    name = "nsjail"

    def __init__(
        self,
        nsjail: str,
        init: str,
        supervisor: str,
        cgroups: Cgroups | None,
        cgroups_problem: str = "",
    ) -> None:
        super().__init__(supervisor, cgroups, cgroups_problem)
        self.nsjail = nsjail
        # What becomes pid 1 of each job's pid namespace, then nsjail (`nsjail_init.c`).
        self.init = init
        self.jail_detail = f"nsjail ({nsjail}) + seccomp (Kafel, same rules)"

    def _spec(self, plan: SandboxPlan, cgroup: JobCgroup | None) -> JailSpec:
        spec = dataclasses.replace(
            super()._spec(plan, cgroup),
            nsjail_init=self.init,
            # nsjail compiles the same rules from their Kafel rendering: no BPF to ship.
            seccomp_bpf="",
        )
        return dataclasses.replace(spec, nsjail_argv=render_argv(spec, self.nsjail))
