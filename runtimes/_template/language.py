"""What only Python code can say about the template language: how a job's arguments reach
its wrapper. The rest is `LanguagePlugin`'s default: no parameters described, no
dependencies, nothing generated for a build. A plugin imports the service only through
`gristmill.languages`."""

from __future__ import annotations

import json
import re

from gristmill.languages import ArgumentsRejected, Job, LanguagePlugin

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A shell variable's or function's name: what an argument and an entry point must be."""


class Plugin(LanguagePlugin):
    def job_message(self, job: Job, source_path: str) -> bytes:
        """What the wrapper reads on fd 4: the source's path and the entry point, each on
        a line, then one `name=value` line per argument (a value not a string as JSON)."""
        if not NAME.fullmatch(job.entry_point):
            raise ArgumentsRejected(f"entry point {job.entry_point!r} is not a shell name")
        lines = [source_path, job.entry_point]
        for name, value in sorted(job.args.items()):
            text = value if isinstance(value, str) else json.dumps(value)
            if not NAME.fullmatch(name):
                raise ArgumentsRejected(f"argument {name!r} is not a shell name")
            if "\n" in text or "\0" in text:
                raise ArgumentsRejected(f"argument {name!r}: a value is one line")
            lines.append(f"{name}={text}")
        return "".join(f"{line}\n" for line in lines).encode()
