"""A language folder imports the service only through `gristmill.languages`, its one API."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gristmill.languages.registry import REPO_ROOT, Registry

RUNTIMES = REPO_ROOT / "runtimes"
API = "gristmill.languages"

# Not plugin code: the Python wrapper in template mode runs inside the sandbox as the
# service's own fork template, which is the service's code by design (its README says so).
ALLOWED = {("python/wrapper.py", "gristmill.isolation.template")}


def _imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module a file imports, nested imports included, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _core_imports(path: Path, root: Path = RUNTIMES) -> list[str]:
    """The `gristmill.*` modules `path` (under `root`) imports outside the plugin API."""
    relative = path.relative_to(root).as_posix()
    return [
        f"{relative}:{line}: {module}"
        for line, module in _imported(ast.parse(path.read_text(), str(path)))
        if module.split(".")[0] == "gristmill"
        and module != API
        and not module.startswith(f"{API}.")
        and (relative, module) not in ALLOWED
    ]


def test_every_language_folder_imports_the_service_only_through_its_plugin_api() -> None:
    sources = sorted(RUNTIMES.rglob("*.py"))
    assert len(sources) > 20, "the runtimes were not found"
    assert [found for path in sources for found in _core_imports(path)] == []


def test_the_check_sees_an_import_of_another_core_module(tmp_path: Path) -> None:
    """The rule would fail a folder that reached past the API, nested imports too."""
    source = "from gristmill.languages import Job\n\ndef f():\n    import gristmill.deps.cache\n"
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "language.py").write_text(source)
    found = _core_imports(tmp_path / "probe" / "language.py", tmp_path)
    assert found == ["probe/language.py:4: gristmill.deps.cache"]


@pytest.mark.parametrize("name", ["LanguagePlugin", "Resolver", "Step", "ToolContext"])
def test_the_api_exports_what_a_plugin_builds_on(name: str) -> None:
    import gristmill.languages

    assert name in gristmill.languages.__all__
    assert getattr(gristmill.languages, name).__module__.startswith(API)


def test_each_languages_resolver_lives_in_its_resolver_py() -> None:
    """The same role has the same file name in every folder: a newcomer finds Maven's
    rules where uv's are."""
    resolvers = {r.name: r.plugin.resolver() for r in Registry()}
    modules = {name: type(tool).__module__ for name, tool in resolvers.items() if tool}
    assert len(modules) >= 5
    assert {name: module.rsplit(".", 1)[-1] for name, module in modules.items()} == {
        name: "resolver" for name in modules
    }


def test_the_api_imports_no_part_of_the_server_extra() -> None:
    """A client-only install's CLI reads runtime.toml through this package (guessing a
    file's language): tree-sitter, the server's extra, is the plugins' own import."""
    probe = "import sys, gristmill.languages.spec; print('tree_sitter' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr
