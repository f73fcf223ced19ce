"""The one sandbox backend, of two builders: every job's jail built by a `JailBuilder`
(`jail_builders.py`: the fork server's own namespaces, or nsjail), every job supervised
by the compiled supervisor (`nsjail_supervisor.c`) under the fork server
(`forkserver.py`), which the backend starts and owns; the service's side of each job is
a `SupervisedSandbox` (`supervised_sandbox.py`)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import SandboxInfo, SandboxPlan, StopReason
from gristmill.isolation.cgroups import Cgroups, JobCgroup, Version
from gristmill.isolation.egress import host_addresses, policy
from gristmill.isolation.forkserver import FD_NAMES
from gristmill.isolation.jail import JailSpec
from gristmill.isolation.jail_builders import JailBuilder
from gristmill.isolation.layout import JAIL_JOB_DIR
from gristmill.isolation.supervised_sandbox import SupervisedSandbox, reader

_FORK_SERVER_MAIN = "from gristmill.isolation.forkserver import main; main()"


class SupervisedBackend:
    """Starts jails through a fork server process it owns, each built by `builder` (the
    backend's name is its) and supervised by the compiled `supervisor`.

    The fork server, the supervision, the cgroup and the accounting are the same for
    either builder (`jail_builders.py`), which only adds how the jail itself is built.
    """

    def __init__(
        self,
        builder: JailBuilder,
        supervisor: str,
        cgroups: Cgroups | None,
        cgroups_problem: str = "",
    ) -> None:
        self.builder = builder
        self.name = builder.name
        # The compiled supervisor of every job (`nsjail_supervisor.c`).
        self.supervisor = supervisor
        self.cgroups = cgroups
        self._cgroups_problem = cgroups_problem
        self._server: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        # Cgroups being removed in the background once their last process has gone.
        self._cleanups: set[asyncio.Future[None]] = set()
        # Sandboxes whose supervisor has not exited yet, by the task reading its report.
        self._live: dict[asyncio.Future[None], SupervisedSandbox] = {}

    def _start_fork_server(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._server = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER_MAIN, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        theirs.close()
        self._sock = ours
        return ours

    def info(self) -> SandboxInfo:
        enforced = ["wall_time", "cpu_time", "output", "network", "file_size", "disk"]
        if self.cgroups is not None:
            enforced[1:1] = ["memory", "processes"]
            if self.cgroups.cpu_quota:
                enforced.append("cpu_millicores")
            detail = self.cgroups.describe()
        else:
            enforced[1:1] = ["memory (RLIMIT_AS)", "processes (RLIMIT_NPROC)"]
            detail = f"no cgroups ({self._cgroups_problem}); memory by RLIMIT_AS"
        return SandboxInfo(self.name, tuple(enforced), f"{self.builder.detail}; {detail}")

    def _spec(self, plan: SandboxPlan, cgroup: JobCgroup | None) -> JailSpec:
        limits = plan.limits
        profile, ruleset = plan.profile, ""
        if limits.network:
            egress = plan.egress or policy(())
            profile = egress.applied_to(profile, plan.root_dir.with_name("network"))
            ruleset = egress.nft_ruleset(host_addresses(), limits.network_connections)
        spec = JailSpec.from_profile(
            profile,
            argv=list(plan.argv),
            env=dict(plan.env),
            job_dir=str(plan.job_dir),
            root_dir=str(plan.root_dir),
            jail_job_dir=JAIL_JOB_DIR,
            network=limits.network,
            wall_time_ms=limits.wall_time_ms,
            cpu_time_ms=limits.cpu_time_ms,
            address_space_bytes=0 if cgroup else limits.memory_bytes,
            nproc_limit=0 if cgroup else limits.processes + plan.profile.overhead_processes,
            cgroup_join_files=[str(p) for p in cgroup.join_files] if cgroup else [],
            cpu_usage_file=str(cgroup.cpu_usage_file) if cgroup else "",
            pids_events_file=str(cgroup.pids_events_file) if cgroup else "",
            memory_files=[str(p) for p in cgroup.memory_files] if cgroup else [],
            supervisor_cgroup_files=[str(p) for p in cgroup.supervisor_join_files]
            if cgroup
            else [],
            cpu_usage_v2=bool(cgroup and cgroup.version is Version.V2),
            seccomp_bpf="",  # the builder's
            warm=plan.warm,
            supervisor=self.supervisor,
            egress_ruleset=ruleset,
            network_bytes=limits.network_bytes,
            network_connections=limits.network_connections if limits.network else 0,
            **(self._network_cgroup(cgroup) if limits.network and cgroup else {}),
        )
        return self.builder.build(spec, plan)

    @staticmethod
    def _network_cgroup(cgroup: JobCgroup) -> dict[str, object]:
        """A network-on job's: where its helper is accounted, and what its sockets hold."""
        sockets = cgroup.socket_memory_file
        return {
            "helper_cgroup_files": [str(p) for p in cgroup.helper_join_files],
            "socket_memory_file": str(sockets) if sockets else "",
        }

    def _send(self, payload: bytes, fds: list[int]) -> None:
        for attempt in range(2):
            sock = self._sock or self._start_fork_server()
            try:
                socket.send_fds(sock, [payload], fds)
                return
            except OSError as error:
                self._sock = None
                if attempt:
                    raise SandboxFailure(f"the fork server is gone: {error}") from error

    async def start(self, plan: SandboxPlan) -> SupervisedSandbox:
        processes = plan.limits.processes + plan.profile.overhead_processes
        # A warm sandbox starts at the least CPU weight: it takes only what running jobs
        # leave (started beside a job at full weight, it slowed that job by a third).
        cgroup = (
            self.cgroups.create(
                plan.limits.memory_bytes,
                processes,
                plan.limits.cpu_millicores,
                background=plan.warm,
            )
            if self.cgroups
            else None
        )
        pipes = {name: os.pipe() for name in FD_NAMES}
        # The child gets the write ends of its output channels and the read ends of its inputs.
        theirs = {
            "stdin": pipes["stdin"][0],
            "stdout": pipes["stdout"][1],
            "stderr": pipes["stderr"][1],
            "result": pipes["result"][1],
            "job": pipes["job"][0],
            "control": pipes["control"][0],
            "report": pipes["report"][1],
        }
        ours = {name: (r if theirs[name] == w else w) for name, (r, w) in pipes.items()}
        try:
            spec = self._spec(plan, cgroup)
            self._send(spec.to_json(), [theirs[n] for n in FD_NAMES])
        except BaseException:
            for fd in (*theirs.values(), *ours.values()):
                os.close(fd)
            if cgroup:
                cgroup.remove()
            raise
        for fd in theirs.values():
            os.close(fd)
        readers = {
            name: await reader(ours[name]) for name in ("stdout", "stderr", "result", "report")
        }
        return SupervisedSandbox(
            readers,
            ours["job"],
            ours["stdin"],
            ours["control"],
            spec,
            cgroup,
            self._cleanups,
            self._live,
            plan.profile.overhead_processes,
            plan.limits.memory_bytes,
        )

    async def close(self) -> None:
        """Ends every sandbox still running (nothing started here outlives the backend),
        waits for their supervisors and groups to go, then for the fork server."""
        running = list(self._live.values())
        for sandbox in running:
            sandbox.stop(StopReason.CANCEL)
        # wait() once more for those nobody waited for: their groups are accounted, emptied
        # and removed like any other's.
        await asyncio.gather(*(sandbox.wait() for sandbox in running), return_exceptions=True)
        await asyncio.gather(*self._live, *self._cleanups, return_exceptions=True)
        if self.cgroups is not None:
            self.cgroups.remove()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._server is not None:
            try:
                await asyncio.to_thread(self._server.wait, 5)
            except subprocess.TimeoutExpired:
                self._server.kill()
            self._server = None
