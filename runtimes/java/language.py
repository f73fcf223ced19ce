"""What only Python code can say about Java jobs: its entry point's parameters
(`signature.py`), how its arguments travel, the files the build compiles, and its `//DEPS`
lines (`dependencies.py`, resolved with Maven by `resolver.py`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.languages import (
    ArgumentsRejected,
    Dependency,
    Job,
    LanguagePlugin,
    syntax,
)

from . import dependencies, signature
from .resolver import Maven

SOURCE_DIR = "gristmill-src"
"""Where the build finds the job's code under the name javac wants (`<PublicClass>.java`)."""
CLASS_FILE = "gristmill-class"
"""The build's note of the class holding the entry point (for the CDS archive's warm-up)."""


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        return signature.schema(code, entry_point)

    def job_message(self, job: Job, source_path: str) -> bytes:
        """The JSON job message plus the entry point's class; arguments whose names do not
        fit the declared parameters are refused before anything runs."""
        entry = signature.find_entry(signature.lenient_tree(job.code), job.entry_point)
        class_name = entry.class_name if entry is not None else "Main"
        if entry is not None and entry.method is not None:
            parameters = signature.parameters(entry.method)
            declared = [name for name, _kind, _varargs in parameters]
            overloaded = sum(
                1
                for m in syntax.children(entry.method.parent or entry.method, "method_declaration")
                if syntax.field_text(m, "name") == job.entry_point
            )
            if overloaded == 1 and all(declared):
                optional = {n for n, kind, _v in parameters if signature.is_optional(kind)}
                missing = [n for n in declared if n not in job.args and n not in optional]
                unknown = [n for n in job.args if n not in declared]
                if missing:
                    raise ArgumentsRejected(f"missing argument '{missing[0]}'")
                if unknown:
                    raise ArgumentsRejected(f"unknown argument '{unknown[0]}'")
        message = {
            "class": class_name,
            "entry_point": job.entry_point,
            "args": dict(job.args),
            "source": source_path,
        }
        return json.dumps(message).encode()

    def build_files(self, job: Job) -> Mapping[str, bytes]:
        entry = signature.find_entry(signature.lenient_tree(job.code), job.entry_point)
        stem = entry.file_stem if entry is not None else "Main"
        class_name = entry.class_name if entry is not None else "Main"
        return {
            f"{SOURCE_DIR}/{stem}.java": job.code.encode(),
            CLASS_FILE: class_name.encode(),
        }

    def resolver(self) -> Maven:
        return Maven()

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return dependencies.declared(code)
