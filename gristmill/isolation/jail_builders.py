"""The two ways a jail is built, each a builder that one supervised backend is given
(`supervised_backend.py`): the fork server's own namespaces (the `process` backend),
or nsjail's command line (the `nsjail` backend). The supervision is the same for both
(`nsjail_supervisor.c`); a builder only adds its part to the job's `JailSpec`."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from gristmill.isolation.backend import SandboxPlan
from gristmill.isolation.jail import JailSpec
from gristmill.isolation.nsjail import render_argv
from gristmill.isolation.seccomp import compile_bpf
from gristmill.isolation.template import template_command

__all__ = ["JailBuilder", "NsjailArgv", "OwnNamespaces"]


class JailBuilder(Protocol):
    # The backend's name, and what its jail is made of (for `SandboxInfo.detail`).
    name: str
    detail: str

    def build(self, spec: JailSpec, plan: SandboxPlan) -> JailSpec:
        """`spec` (the job's, whoever builds its jail) with how this builder builds it."""
        ...


class OwnNamespaces:
    """Jails built by the fork server's children (`jail.py`): the seccomp filter compiled
    here, and, with `fork_interpreters`, Python's program forked from a template
    (`template.py`), never a network-on job's, whose namespace is its supervisor's."""

    name = "process"
    detail = "own namespaces + seccomp (libseccomp)"

    def __init__(self, fork_interpreters: bool = False) -> None:
        self.fork_interpreters = fork_interpreters

    def build(self, spec: JailSpec, plan: SandboxPlan) -> JailSpec:
        seccomp = plan.profile.seccomp
        forked = self.fork_interpreters and not spec.network
        return dataclasses.replace(
            spec,
            seccomp_bpf=compile_bpf(seccomp.deny, network=spec.network, nosys=seccomp.nosys).hex(),
            fork_template=template_command(plan.argv, plan.profile.mounts) if forked else [],
        )


class NsjailArgv:
    """Jails built by the nsjail binary at `nsjail` from the same profile
    (`nsjail.render_argv`), through `init`, each job's pid 1 until it becomes nsjail
    (`nsjail_init.c`). nsjail compiles the same seccomp rules from their Kafel rendering."""

    name = "nsjail"

    def __init__(self, nsjail: str, init: str) -> None:
        self.nsjail = nsjail
        self.init = init
        self.detail = f"nsjail ({nsjail}) + seccomp (Kafel, same rules)"

    def build(self, spec: JailSpec, plan: SandboxPlan) -> JailSpec:
        spec = dataclasses.replace(spec, nsjail_init=self.init)
        return dataclasses.replace(spec, nsjail_argv=render_argv(spec, self.nsjail))
