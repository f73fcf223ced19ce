"""What a language may say in Python about itself, beyond its runtime.toml."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from gristmill.isolation.profile import BindMount
from gristmill.model import Dependency, Job

if TYPE_CHECKING:
    from gristmill.config import DatabaseConfig
    from gristmill.languages.resolver import Resolver


class ArgumentsRejected(Exception):
    """The job's arguments do not fit its code; the job ends INVALID_ARGUMENTS unrun."""


class LanguagePlugin:
    """Defaults that fit any language whose wrapper reads the JSON job message.

    A language's `language.py` subclasses this as `Plugin` and overrides what differs.
    """

    offloaded: ClassVar[bool] = True
    """Whether a call on a large input (a job's message, its schema, its dependencies) may
    run in a worker process, on a fresh, unconfigured copy of the plugin. False for a
    plugin whose calls read or keep the service's own state (its configured databases, the
    token it hands a job): those run on a thread of the service instead."""

    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        """The entry point's parameters as a JSON Schema object; no parameters by default."""
        return {"type": "object", "properties": {}, "required": []}

    def check_request(self, job: Job) -> None:
        """Raises `InvalidRequest` (naming the field) for a job this server cannot take at
        all, e.g. one naming a resource it does not have; called while the request is
        checked, so the caller gets INVALID_ARGUMENT and nothing starts. Nothing by default."""

    def job_message(self, job: Job, source_path: str) -> bytes:
        """The bytes the wrapper reads on fd 4: by default the JSON job message.

        Raises ArgumentsRejected when the arguments can be judged wrong without running.
        A job run as a script (`Job.script`) gets `{"script": [argv...], "source": ...}`.
        """
        if job.script is not None:
            return json.dumps({"script": list(job.script), "source": source_path}).encode()
        message = {"entry_point": job.entry_point, "args": dict(job.args), "source": source_path}
        return json.dumps(message).encode()

    def build_files(self, job: Job) -> Mapping[str, bytes]:
        """Files generated beside the job's code for its `[build]` step, by relative path.

        What only code can write: e.g. Go's real `main`, which decodes the job message and
        calls the user's entry point. They are part of the build's cache key, so a change
        to what the plugin generates builds again. None by default; never seen by the run.
        Raises ArgumentsRejected when the job cannot be built as asked (e.g. an entry point
        the language cannot name).
        """
        return {}

    def resolver(self) -> Resolver | None:
        """The language's dependency tool; None (the default) for a language without packages."""
        return None

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        """The packages `code` needs, in order of appearance; `files` are the job's other
        files (by relative path), which are never packages. None by default.

        Raises `gristmill.deps.DependencyFailure` for a declaration that cannot be read.
        """
        return ()

    def job_dependencies(self, code: str, files: Mapping[str, bytes]) -> tuple[Dependency, ...]:
        """What the service asks: the packages a job needs, given its other files' contents
        by relative path. By default `dependencies(code, paths)`; a language whose jobs may
        declare their dependencies in a file of their own (a manifest among the files)
        overrides this to read it."""
        return self.dependencies(code, list(files))

    def configure(self, databases: Mapping[str, DatabaseConfig]) -> None:
        """Called once by the service with the databases it has, by name. Their
        credentials are the service's: a plugin uses them in the service, never hands
        them to a job. Nothing by default."""

    def attach(self, job: Job) -> contextlib.AbstractAsyncContextManager[Sequence[BindMount]]:
        """What the service provides to `job`'s run sandbox while it runs: host paths
        mounted into it, e.g. a directory holding a Unix socket the plugin serves (a
        socket crosses the sandbox's network namespace). Entered just before the sandbox
        starts, exited once it has ended, however it ended (timeout and cancel included).
        Raises ArgumentsRejected for a job asking what the server does not have. None
        by default."""
        return contextlib.nullcontext(())
