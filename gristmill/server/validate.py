"""Checks on a request's plain values, each failure an `InvalidRequest` naming the field.

Kept free of protobuf so that the rules read on their own and are tested without it;
`convert` applies them while building a `gristmill.model.Job`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from gristmill import strictjson
from gristmill.config import ENV_PREFIX
from gristmill.errors import InvalidRequest, LimitTooHigh, quoted
from gristmill.isolation.egress import PolicyError, parse_entry
from gristmill.languages import lockfiles
from gristmill.languages.spec import RuntimeSpec
from gristmill.model import JobFile, Limits, Lockfile

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENTRY_POINT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,255}")


def job_id(value: str, field: str = "job.id") -> str:
    if not value:
        raise InvalidRequest(field, "required")
    if not _JOB_ID.fullmatch(value):
        raise InvalidRequest(field, "at most 128 characters of [A-Za-z0-9._:-]")
    return value


def entry_point(value: str, default: str, field: str = "job.entry_point") -> str:
    if not value:
        return default
    if not _ENTRY_POINT.fullmatch(value):
        raise InvalidRequest(field, f"{quoted(value)} is not a valid name")
    return value


def at_most(size: int, cap: int, field: str, unit: str = "bytes") -> None:
    """Refuses a request part over its cap (`gristmill.config.Caps`) before any work on it."""
    if size > cap:
        raise InvalidRequest(field, f"{size} {unit}, over this server's cap of {cap}")


def text_size(text: str, cap: int, field: str) -> None:
    """`text` is at most `cap` bytes as UTF-8 (encoded only when its length allows it)."""
    at_most(len(text), cap, field)
    at_most(len(text.encode("utf-8", "surrogatepass")), cap, field)


def args_json(text: str) -> dict[str, Any]:
    """The arguments from exact JSON text; integers keep every digit."""
    try:
        value = strictjson.loads(text)
    except ValueError as error:
        raise InvalidRequest("job.args_json", f"not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise InvalidRequest("job.args_json", "must be a JSON object")
    return value


MAX_NAME_BYTES = 255
"""The longest file name Linux file systems take (NAME_MAX)."""


def files(
    items: Iterable[JobFile], source_file: str, name: str = "job.files"
) -> tuple[JobFile, ...]:
    """The job's extra files: each a distinct file inside the job directory, none of them
    the code's own file, and none both a file and a directory of another's path."""
    seen = {PurePosixPath(source_file): "the job's code"}
    checked = []
    for index, item in enumerate(items):
        field = f"{name}[{index}].path"
        path = PurePosixPath(item.path)
        if not item.path or "\0" in item.path or path.name in ("", "."):
            raise InvalidRequest(field, "must name a file")
        if path.is_absolute() or ".." in path.parts:
            raise InvalidRequest(field, f"{quoted(item.path)} must be relative, without '..'")
        if any(len(part.encode()) > MAX_NAME_BYTES for part in path.parts):
            raise InvalidRequest(field, f"a path component is over {MAX_NAME_BYTES} bytes")
        if path in seen:
            raise InvalidRequest(field, f"{quoted(item.path)} is already {seen[path]}")
        seen[path] = f"{name}[{index}]"
        checked.append(item)
    for path, origin in seen.items():
        clash = next((parent for parent in path.parents if parent in seen), None)
        if clash is not None:
            raise InvalidRequest(
                f"{origin}.path",
                f"{quoted(str(path))} lies under {quoted(str(clash))}, which is a file",
            )
    return tuple(checked)


MAX_ENV_BYTES = 64 * 1024
"""All of a job's environment, names and values: it travels in one message to the sandbox."""


MAX_NETWORK_ALLOW = 64


def network_allow(entries: Iterable[str], network: bool) -> tuple[str, ...]:
    """A request's allow list: well-formed entries (resolved later), for a network-on job."""
    allowed = tuple(entries)
    if allowed and not network:
        raise InvalidRequest("job.network_allow", "only for a job with limits.network")
    if len(allowed) > MAX_NETWORK_ALLOW:
        raise InvalidRequest("job.network_allow", f"more than {MAX_NETWORK_ALLOW} entries")
    for index, entry in enumerate(allowed):
        try:
            parse_entry(entry)
        except PolicyError as error:
            raise InvalidRequest(f"job.network_allow[{index}]", str(error)) from error
    return allowed


LOADER_VARIABLES = (
    "LD_*",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_*",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
)
"""Refused in `Job.env` for every language: the dynamic loader and the C library read
them in the wrapper (the service's code, which may hold what the job must not have, as
the SQL wrapper holds its relay's token) before any of the job's code runs, and
`LD_PRELOAD` of a file the job ships runs native code there. It is glibc's own list of
variables unsafe for a privileged program (unsecvars.h), all of `LD_*` and `MALLOC_*`,
less TMPDIR (which only moves the job's own temporary files)."""


def refused_by(name: str, patterns: Iterable[str]) -> str | None:
    """The first of `patterns` (`NAME` or `PREFIX*`, `spec.ENV_PATTERN`) `name` matches."""
    for pattern in patterns:
        if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
            return pattern
    return None


@functools.cache
def _refusing(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One expression for the names `patterns` refuse, each of a job's variables matched
    once on every job's way in (trying each pattern, `refused_by`, is ten times slower:
    it only names the pattern of a refusal)."""
    return re.compile(
        "|".join(
            re.escape(p.removesuffix("*")) + (".*" if p.endswith("*") else "") for p in patterns
        )
    )


def env(values: Mapping[str, str], spec: RuntimeSpec) -> dict[str, str]:
    """The job's variables: valid names, none reserved or refused for `spec`'s language
    (`LOADER_VARIABLES`, its runtime.toml's `[env] refused`)."""
    total = sum(len(name.encode()) + len(value.encode()) + 2 for name, value in values.items())
    if total > MAX_ENV_BYTES:
        raise InvalidRequest("job.env", f"{total} bytes in all, over {MAX_ENV_BYTES}")
    refusing = _refusing(LOADER_VARIABLES + spec.env_refused)
    for name, value in values.items():
        field = f"job.env[{quoted(name)}]"
        if not _ENV_NAME.fullmatch(name):
            raise InvalidRequest(field, "not a valid environment variable name")
        if name.upper().startswith(ENV_PREFIX):
            raise InvalidRequest(field, f"names starting with {ENV_PREFIX} are reserved")
        if refusing.fullmatch(name):
            if pattern := refused_by(name, LOADER_VARIABLES):
                raise InvalidRequest(
                    field,
                    f"refused ({pattern}): the loader and C library read it in the wrapper, "
                    "before the job's code",
                )
            raise InvalidRequest(
                field,
                f"refused ({refused_by(name, spec.env_refused)}, in runtime.toml): it changes "
                f"what the {spec.display_name} wrapper or runtime does, not only the job's code",
            )
        if "\0" in value:
            raise InvalidRequest(field, "the value contains a NUL byte")
    return dict(values)


MAX_OUTPUT_PATTERNS = 64
MAX_PATTERN_LENGTH = 4096
_CONTEXT_KEY = re.compile(r"[A-Z0-9_]{1,64}")
MAX_SCRIPT_ARGS = 4096


def output_files(patterns: Iterable[str], field: str = "job.output_files") -> tuple[str, ...]:
    """Paths or globs relative to /job, none leaving it (`gristmill.jobs.files_out`)."""
    checked = tuple(patterns)
    if len(checked) > MAX_OUTPUT_PATTERNS:
        raise InvalidRequest(field, f"{len(checked)} patterns, over {MAX_OUTPUT_PATTERNS}")
    for index, pattern in enumerate(checked):
        path, where = PurePosixPath(pattern), f"{field}[{index}]"
        if not pattern or "\0" in pattern or len(pattern) > MAX_PATTERN_LENGTH:
            raise InvalidRequest(
                where, f"must be a path or glob of 1 to {MAX_PATTERN_LENGTH} chars"
            )
        if path.is_absolute() or ".." in path.parts:
            raise InvalidRequest(where, f"{quoted(pattern)} must be relative, without '..'")
    return checked


def context(values: Mapping[str, str], field: str = "job.context") -> dict[str, str]:
    """The caller's context, each key seen by the job as GRISTMILL_CTX_<key>."""
    total = sum(len(name.encode()) + len(value.encode()) + 16 for name, value in values.items())
    if total > MAX_ENV_BYTES:
        raise InvalidRequest(field, f"{total} bytes in all, over {MAX_ENV_BYTES}")
    for name, value in values.items():
        if not _CONTEXT_KEY.fullmatch(name):
            raise InvalidRequest(
                f"{field}[{quoted(name)}]", "keys are 1 to 64 characters of [A-Z0-9_]"
            )
        if "\0" in value:
            raise InvalidRequest(f"{field}[{quoted(name)}]", "the value contains a NUL byte")
    return dict(values)


def script_argv(argv: Iterable[str], field: str = "job.script.argv") -> tuple[str, ...]:
    """A script's positional arguments: they travel NUL-separated, so none holds a NUL."""
    checked = tuple(argv)
    if len(checked) > MAX_SCRIPT_ARGS:
        raise InvalidRequest(field, f"{len(checked)} arguments, over {MAX_SCRIPT_ARGS}")
    for index, value in enumerate(checked):
        if "\0" in value:
            raise InvalidRequest(f"{field}[{index}]", "contains a NUL byte")
    return checked


MIN_MEMORY_BYTES = 16 * 1024 * 1024
"""The least memory a job may ask for: below it the sandbox itself (supervisor, nsjail,
an interpreter's start) does not fit, and the job would end in SANDBOX_ERROR."""


def limits(asked: Limits, defaults: Limits, maxima: Limits) -> Limits:
    """`asked` with zeros taken from `defaults`; a value over `maxima` is refused, not clipped."""
    if 0 < asked.memory_bytes < MIN_MEMORY_BYTES:
        raise InvalidRequest(
            "job.limits.memory_bytes",
            f"{asked.memory_bytes} is under the minimum {MIN_MEMORY_BYTES} (16 MiB)",
        )
    if asked.network and not maxima.network:
        raise InvalidRequest("job.limits.network", "this server does not allow network access")
    resolved: dict[str, Any] = {"network": asked.network}
    for limit in dataclasses.fields(Limits):
        if limit.name == "network":
            continue
        value = getattr(asked, limit.name) or getattr(defaults, limit.name)
        maximum = getattr(maxima, limit.name)
        if value > maximum:
            raise LimitTooHigh(limit.name, value, maximum)
        resolved[limit.name] = value
    return Limits(**resolved)


_SHA256 = re.compile(r"[0-9a-f]{64}")
ACCEPTED_LOCKFILES = 4096
"""How many accepted lockfiles `lockfile` remembers, by language, format, SHA-256 and the
rules that read them (then it starts again): a queue worker sends the lockfile it was
given back with every job, and its rules reading it again cost each job (a bun.lock of
800 packages 11 ms of the service's CPU, more than the rest of a job's way in; 60 Python
pins 0.9 ms). A refusal is never remembered."""
_accepted: set[tuple[str, str, str, object]] = set()


def lockfile(
    given: Lockfile,
    sha256: str,
    language: str,
    lock_format: str | None,
    field: str,
    own_rules: Callable[[str], None] | None = None,
) -> Lockfile:
    """A lockfile a job may be installed from: for its language, in its resolver's format,
    its content matching `sha256` when that is given, and passing `own_rules`, its
    resolver's `check_lockfile` (`gristmill.languages.lockfiles.check`; a format without rules
    is refused). Empty language and format mean the job's."""
    if lock_format is None:
        raise InvalidRequest(field, f"{language} jobs have no dependencies to lock")
    if given.language and given.language != language:
        raise InvalidRequest(f"{field}.language", f"{quoted(given.language)} is not {language!r}")
    if given.format and given.format != lock_format:
        raise InvalidRequest(f"{field}.format", f"{quoted(given.format)} is not {lock_format!r}")
    if not given.content:
        raise InvalidRequest(f"{field}.content", "required")
    checked = Lockfile(language, lock_format, given.content)
    digest = checked.sha256
    if sha256 and sha256 != digest:
        why = "is not hex SHA-256" if not _SHA256.fullmatch(sha256) else "does not match content"
        raise InvalidRequest(f"{field}.sha256", why)
    # A resolver's method is the same rules whichever instance of it is asked.
    remembered = (language, lock_format, digest, getattr(own_rules, "__func__", own_rules))
    if remembered in _accepted:
        return checked
    try:
        lockfiles.check(lock_format, checked.content, own_rules)
    except lockfiles.LockfileRefused as refused:
        raise InvalidRequest(f"{field}.content", str(refused)) from refused
    if len(_accepted) >= ACCEPTED_LOCKFILES:
        _accepted.clear()
    _accepted.add(remembered)
    return checked
