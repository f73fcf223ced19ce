"""The requests the clients send, built from Python values: a job, a resolve."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import TypedDict, Unpack

from gristmill.model import JsonValue
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["JobOptions", "Limits", "Lockfile", "execute_request", "resolve_request"]

Limits = pb.Limits
Lockfile = pb.Lockfile


class JobOptions(TypedDict, total=False):
    """The optional parts of a job: keyword arguments of every call that sends one."""

    # The idempotency key; a new uuid4 unless given.
    job_id: str | None
    entry_point: str | None
    # Further files beside the code, by relative path.
    files: Mapping[str, bytes | str] | None
    env: Mapping[str, str] | None
    limits: pb.Limits | None
    # From an earlier Outcome or `resolve`: replays exactly those dependencies.
    lockfile: pb.Lockfile | None
    stdin: bytes | str | None
    # Paths or globs under /job whose files come back in `Outcome.files`.
    output_files: Sequence[str] | None
    # Seen by the job as GRISTMILL_CTX_<KEY> variables.
    context: Mapping[str, str] | None
    # Run the code as a plain script with this argv instead of calling its entry point.
    script: Sequence[str] | None


def execute_request(
    language: str,
    code: str,
    args: Mapping[str, JsonValue] | None = None,
    **options: Unpack[JobOptions],
) -> pb.ExecuteRequest:
    """The request for one job. Arguments travel as exact JSON text (`args_json`) so that
    big integers survive; a script (`script=[...]`) takes none. A keyword that is not a
    `JobOptions` key is a TypeError, as it would be for a spelled-out signature."""
    if unknown := sorted(set(options) - JobOptions.__optional_keys__):
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    stdin = options.get("stdin") or b""
    script = options.get("script")
    job = pb.Job(
        id=options.get("job_id") or str(uuid.uuid4()),
        language=language,
        code=code,
        entry_point=options.get("entry_point") or "",
        args_json=json.dumps(dict(args or {})) if script is None or args else "",
        files=_files(options.get("files")),
        env=dict(options.get("env") or {}),
        limits=options.get("limits"),
        lockfile=options.get("lockfile"),
        stdin=stdin.encode() if isinstance(stdin, str) else stdin,
        output_files=list(options.get("output_files") or ()),
        context=dict(options.get("context") or {}),
    )
    if script is not None:
        job.script.argv.extend(script)
    return pb.ExecuteRequest(job=job)


def resolve_request(
    language: str, code: str, files: Mapping[str, bytes | str] | None = None
) -> pb.ResolveRequest:
    return pb.ResolveRequest(language=language, code=code, files=_files(files))


def _files(files: Mapping[str, bytes | str] | None) -> list[pb.File]:
    return [
        pb.File(path=path, content=content.encode() if isinstance(content, str) else content)
        for path, content in (files or {}).items()
    ]
