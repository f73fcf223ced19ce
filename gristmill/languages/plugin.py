"""What a language may say in Python about itself, beyond its runtime.toml."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gristmill.model import Job


class ArgumentsRejected(Exception):
    """The job's arguments do not fit its code; the job ends INVALID_ARGUMENTS unrun."""


class LanguagePlugin:
    """Defaults that fit any language whose wrapper reads the JSON job message.

    A language's `language.py` subclasses this as `Plugin` and overrides what differs.
    """

    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        """The entry point's parameters as a JSON Schema object; no parameters by default."""
        return {"type": "object", "properties": {}, "required": []}

    def job_message(self, job: Job, source_path: str) -> bytes:
        """The bytes the wrapper reads on fd 4: by default the JSON job message.

        Raises ArgumentsRejected when the arguments can be judged wrong without running.
        """
        message = {"entry_point": job.entry_point, "args": dict(job.args), "source": source_path}
        return json.dumps(message).encode()
