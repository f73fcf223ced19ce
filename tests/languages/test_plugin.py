"""The seam's defaults that every language plugin inherits."""

from __future__ import annotations

from collections.abc import Sequence

from gristmill.languages.plugin import LanguagePlugin
from gristmill.model import Dependency, DependencySource


class ByPath(LanguagePlugin):
    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return tuple(Dependency(p, p, DependencySource.INFERRED, code) for p in files)


def test_job_dependencies_hands_a_plugin_the_paths_of_the_jobs_files_by_default():
    found = ByPath().job_dependencies("code", {"a/b.txt": b"x", "c": b""})
    assert [d.name for d in found] == ["a/b.txt", "c"]


def test_a_plugin_without_packages_needs_nothing():
    assert LanguagePlugin().job_dependencies("code", {"manifest": b"{}"}) == ()
