"""Protobuf messages to and from `gristmill.model` values: the only module that builds pb2 types.

Inside the service everything speaks the plain model; a request becomes a validated
`Job` here (rules in `validate`), and an `Outcome` or event becomes a message here.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from gristmill.config import Caps, ServerConfig
from gristmill.errors import InvalidRequest
from gristmill.isolation.backend import SandboxInfo
from gristmill.languages import Registry, Runtime
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.resolver import ChecksLockfiles
from gristmill.model import (
    Dependency,
    Job,
    JobError,
    JobEvent,
    JobFile,
    Limits,
    Lockfile,
    Outcome,
    Output,
    OutputEvent,
    PhaseEvent,
    Resolution,
    StartedEvent,
)
from gristmill.server import validate
from gristmill.server.jobs import JobState
from gristmill.server.tenants import Tenant
from gristmill.v1 import runtime_pb2 as pb

EXACT_DOUBLE_INTEGER = 2**53


def _whole_numbers_as_integers(value: Any) -> Any:
    """Struct carries every number as a double; a whole one within 2**53 was an integer.

    This is the rule protobuf's own JSON mapping prints by. Integers beyond 2**53
    cannot travel in a Struct at all: `args_json` carries them exactly.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_DOUBLE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_as_integers(item) for item in value]
    return value


def job_files(messages: Iterable[pb.File]) -> list[JobFile]:
    return [JobFile(path=f.path, content=f.content, executable=f.executable) for f in messages]


def _lockfile_from_proto(message: pb.Job, runtime: Runtime) -> Lockfile | None:
    if not message.HasField("lockfile"):
        return None
    given = message.lockfile
    resolver = runtime.plugin.resolver()
    return validate.lockfile(
        Lockfile(given.language, given.format, given.content),
        given.sha256,
        runtime.name,
        resolver.lock_format if resolver else None,
        "job.lockfile",
        resolver.check_lockfile if isinstance(resolver, ChecksLockfiles) else None,
    )


def job_from_proto(
    message: pb.Job,
    registry: Registry,
    config: ServerConfig,
    remaining_s: float | None,
    tenant: Tenant | None = None,
) -> Job:
    """A validated job; `remaining_s` is the time left to the caller's deadline, which
    bounds the job (see `gristmill.jobs.executor.within_deadline`); `tenant`'s maxima
    replace the server's, and the job is its."""
    job_id = validate.job_id(message.id)
    runtime = registry.get(message.language)
    _check_sizes(message, config.caps)
    if message.HasField("args") and message.args_json:
        raise InvalidRequest("job.args_json", "set either args or args_json, not both")
    args = (
        validate.args_json(message.args_json)
        if message.args_json
        else _whole_numbers_as_integers(json_format.MessageToDict(message.args))
    )
    asked = Limits(
        wall_time_ms=message.limits.wall_time_ms,
        memory_bytes=message.limits.memory_bytes,
        cpu_time_ms=message.limits.cpu_time_ms,
        processes=message.limits.processes,
        output_bytes=message.limits.output_bytes,
        network=message.limits.network,
        cpu_millicores=message.limits.cpu_millicores,
        network_bytes=message.limits.network_bytes,
        network_connections=message.limits.network_connections,
    )
    maxima = config.max_limits if tenant is None else tenant.max_limits
    limits = validate.limits(asked, config.default_limits, maxima)
    job = Job(
        id=job_id,
        language=runtime.name,
        code=message.code,
        entry_point=validate.entry_point(message.entry_point, runtime.spec.default_entry_point),
        args=args,
        limits=limits,
        files=validate.files(job_files(message.files), runtime.spec.source_file),
        env=validate.env(message.env, runtime.spec),
        network_allow=validate.network_allow(message.network_allow, limits.network),
        lockfile=_lockfile_from_proto(message, runtime),
        deadline=None if remaining_s is None else time.monotonic() + remaining_s,
        size_bytes=message.ByteSize(),
        stdin=message.stdin,
        output_files=validate.output_files(message.output_files),
        context=validate.context(message.context),
        script=_script(message, runtime),
        tenant="" if tenant is None else tenant.name,
    )
    runtime.plugin.check_request(job)
    return job


def _script(message: pb.Job, runtime: Runtime) -> tuple[str, ...] | None:
    if not message.HasField("script"):
        return None
    if not runtime.spec.script:
        raise InvalidRequest(
            "job.script", f"{runtime.name} jobs have no script form: call an entry point"
        )
    if message.HasField("args") or message.args_json or message.entry_point:
        raise InvalidRequest("job.script", "a script takes argv, not args or an entry point")
    return validate.script_argv(message.script.argv)


def _check_sizes(message: pb.Job, caps: Caps) -> None:
    """The request's parts within the server's caps, checked before anything reads them."""
    validate.text_size(message.code, caps.code_bytes, "job.code")
    validate.text_size(message.args_json, caps.args_bytes, "job.args_json")
    validate.at_most(message.args.ByteSize(), caps.args_bytes, "job.args")
    validate.at_most(len(message.files), caps.files, "job.files", unit="files")
    total = sum(len(f.content) for f in message.files)
    validate.at_most(total, caps.files_bytes, "job.files", unit="bytes of content")
    validate.at_most(len(message.stdin), caps.stdin_bytes, "job.stdin")


def _output(output: Output) -> pb.Output:
    return pb.Output(data=output.data, truncated=output.truncated, total_bytes=output.total_bytes)


def outcome_to_proto(outcome: Outcome, tenant: str = "") -> pb.Outcome:
    usage = outcome.usage
    message = pb.Outcome(
        job_id=outcome.job_id,
        tenant=tenant,
        verdict=outcome.verdict.value,
        result_json=outcome.result_json,
        stdout=_output(outcome.stdout),
        stderr=_output(outcome.stderr),
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        usage=pb.Usage(
            wall_time_ms=usage.wall_time_ms,
            user_cpu_ms=usage.user_cpu_ms,
            system_cpu_ms=usage.system_cpu_ms,
            peak_memory_bytes=usage.peak_memory_bytes,
            processes=usage.processes,
            network_sent_bytes=usage.network_sent_bytes,
            network_received_bytes=usage.network_received_bytes,
            phases=pb.Phases(
                queued_ms=usage.phases.queued_ms,
                prepare_ms=usage.phases.prepare_ms,
                sandbox_setup_ms=usage.phases.sandbox_setup_ms,
                run_ms=usage.phases.run_ms,
                resolve_ms=usage.phases.resolve_ms,
                install_ms=usage.phases.install_ms,
                build_ms=usage.phases.build_ms,
            ),
        ),
        sandbox=outcome.sandbox,
        detail=outcome.detail,
        warm_sandbox=outcome.warm_sandbox,
        files=[pb.File(path=f.path, content=f.content) for f in outcome.files],
    )
    if outcome.lockfile is not None:
        message.lockfile.CopyFrom(lockfile_to_proto(outcome.lockfile))
    if outcome.environment is not None:
        message.environment.CopyFrom(
            pb.Environment(cached=outcome.environment.cached, key=outcome.environment.key)
        )
    if outcome.build is not None:
        message.build.CopyFrom(pb.Build(cached=outcome.build.cached, key=outcome.build.key))
    if outcome.error is not None:
        message.error.CopyFrom(_error(outcome.error))
    return message


def _error(error: JobError) -> pb.JobError:
    return pb.JobError(
        name=error.name,
        message=error.message,
        stack=[
            pb.StackFrame(file=f.file, line=f.line, function=f.function, text=f.text)
            for f in error.stack
        ],
    )


def lockfile_to_proto(lockfile: Lockfile) -> pb.Lockfile:
    return pb.Lockfile(
        language=lockfile.language,
        format=lockfile.format,
        content=lockfile.content,
        sha256=lockfile.sha256,
    )


def _dependency(dependency: Dependency) -> pb.Dependency:
    return pb.Dependency(
        name=dependency.name,
        requirement=dependency.requirement,
        source=dependency.source.value,
        where=dependency.where,
    )


def resolution_to_proto(resolution: Resolution) -> pb.ResolveResponse:
    response = pb.ResolveResponse(dependencies=[_dependency(d) for d in resolution.dependencies])
    if resolution.lockfile is not None:
        response.lockfile.CopyFrom(lockfile_to_proto(resolution.lockfile))
    return response


def resolve_failure(failure: DependencyFailure) -> pb.ResolveResponse:
    return pb.ResolveResponse(error=_error(JobError("DependencyError", str(failure))))


def accepted_event(job_id: str, deduplicated: bool) -> pb.ExecuteEvent:
    return pb.ExecuteEvent(accepted=pb.Accepted(job_id=job_id, deduplicated=deduplicated))


def outcome_event(outcome: Outcome, tenant: str = "") -> pb.ExecuteEvent:
    return pb.ExecuteEvent(outcome=outcome_to_proto(outcome, tenant))


def event_to_proto(event: JobEvent) -> pb.ExecuteEvent:
    match event:
        case PhaseEvent(name=name, detail=detail):
            return pb.ExecuteEvent(phase=pb.Phase(name=name, detail=detail))
        case StartedEvent(pid=pid):
            return pb.ExecuteEvent(started=pb.Started(pid=pid))
        case OutputEvent(stream="stdout", data=data):
            return pb.ExecuteEvent(stdout=data)
        case OutputEvent(stream="stderr", data=data):
            return pb.ExecuteEvent(stderr=data)
    raise ValueError(f"no message for event {event!r}")


_HOST_PATH = re.compile(r"(?<![\w.])(?:/[\w.@+-]+)+")


def _shown(text: str, operator: bool) -> str:
    """`text` as a caller may see it: host paths only for an operator; for others, only
    each path's last component (`…/bun`), which still says what it was."""
    if operator:
        return text
    return _HOST_PATH.sub(lambda path: "…/" + path.group().rpartition("/")[2], text)


def runtime_info(runtime: Runtime, operator: bool = True) -> pb.RuntimeInfo:
    """What ListRuntimes says of one language; asks its toolchain for a version (blocking)."""
    missing = "" if runtime.available else f"missing {', '.join(runtime.missing)}"
    return pb.RuntimeInfo(
        language=runtime.name,
        display_name=runtime.spec.display_name,
        toolchain_version=_shown(runtime.toolchain_version, operator),
        available=runtime.available,
        unavailable_reason=_shown(missing, operator),
        file_extensions=list(runtime.spec.extensions),
        default_entry_point=runtime.spec.default_entry_point,
    )


def sandbox_info(info: SandboxInfo, operator: bool = True) -> pb.SandboxInfo:
    return pb.SandboxInfo(
        backend=info.backend,
        enforced_limits=list(info.enforced_limits),
        detail=_shown(info.detail, operator),
    )


def _limits(limits: Limits) -> pb.Limits:
    return pb.Limits(**{f.name: getattr(limits, f.name) for f in dataclasses.fields(Limits)})


def caller_info(tenant: Tenant) -> pb.CallerInfo:
    return pb.CallerInfo(
        tenant=tenant.name,
        operator=tenant.operator,
        max_concurrent_jobs=tenant.quota.max_running,
        max_queued_jobs=tenant.quota.max_queued,
        max_limits=_limits(tenant.max_limits),
    )


_JOB_STATES = {
    JobState.UNKNOWN: pb.JOB_STATE_UNKNOWN,
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.DONE: pb.JOB_STATE_DONE,
}


def get_outcome_response(
    state: JobState, outcome: Outcome | None, tenant: str
) -> pb.GetOutcomeResponse:
    response = pb.GetOutcomeResponse(state=_JOB_STATES[state])
    if outcome is not None:
        response.outcome.CopyFrom(outcome_to_proto(outcome, tenant))
    return response
