"""The job's context: the environment variables every job sees about itself.

`GRISTMILL_JOB_ID`, `GRISTMILL_LANGUAGE`, `GRISTMILL_DEADLINE` and the caller's own
`Job.context` as `GRISTMILL_CTX_<KEY>` (Windmill gives its jobs `WM_JOB_ID` and the
like). A cold sandbox gets them in its environment at its start; a warm one, started
before its job was known, at the head of its job message (`preamble`), which the
language's wrapper sets in its environment before it loads the job's code.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from gristmill.model import Job

CALLER_PREFIX = "GRISTMILL_CTX_"


def variables(job: Job, now: datetime.datetime | None = None) -> dict[str, str]:
    """The job's context variables; the deadline is `now` plus its wall limit, so `job`'s
    limits must already be cut to its caller's deadline (`executor.within_deadline`)."""
    started = now or datetime.datetime.now(datetime.UTC)
    deadline = started + datetime.timedelta(milliseconds=job.limits.wall_time_ms)
    return {
        **{CALLER_PREFIX + key: value for key, value in job.context.items()},
        "GRISTMILL_JOB_ID": job.id,
        "GRISTMILL_LANGUAGE": job.language,
        "GRISTMILL_DEADLINE": deadline.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def preamble(context: Mapping[str, str]) -> bytes:
    """`NAME=value` strings, each ended by a NUL byte, then one more NUL: what a wrapper
    with `message_context` reads on fd 4 before its job message. (Names and values never
    hold a NUL: `server.validate` refuses them.)"""
    return b"".join(f"{name}={value}".encode() + b"\0" for name, value in context.items()) + b"\0"
