"""What only Python can say about the C test language: the file binding its entry point.

It stands in for what Go will need (a generated `main` calling the user's function):
a file the plugin writes for the build step only, part of the build's cache key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from gristmill.languages.plugin import ArgumentsRejected, LanguagePlugin
from gristmill.model import Job

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Plugin(LanguagePlugin):
    def job_message(self, job: Job, source_path: str) -> bytes:
        """The arguments alone, as a JSON object: the entry point gets them as text."""
        return json.dumps(dict(job.args)).encode()

    def build_files(self, job: Job) -> Mapping[str, bytes]:
        if not _IDENTIFIER.fullmatch(job.entry_point):
            raise ArgumentsRejected(f"{job.entry_point!r} is not a C identifier")
        name = job.entry_point
        source = (
            f"const char *{name}(const char *args_json);\n"
            "const char *gristmill_entry(const char *args_json) {\n"
            f"    return {name}(args_json);\n"
            "}\n"
        )
        return {"gristmill_entry.c": source.encode()}
