"""The package's layers: every import in gristmill/ points down a layer (or stays within
its own) and no modules import each other in a circle.

Imports are read with `ast`, not run. An import under `if TYPE_CHECKING:` is for the
type checker only and is not counted: it may name a higher layer's type (a callback's
signature, say), because at run time nothing is imported. A function-local import is
counted like any other.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gristmill"

LAYERS: list[tuple[str, ...]] = [
    # Types and helpers every layer may use; none of them imports another layer.
    (
        "gristmill",
        "gristmill.model",
        "gristmill.typed_toml",
        "gristmill.config_schema",
        "gristmill.errors",
        "gristmill.strictjson",
        "gristmill.jsonview",
        "gristmill.resources",
        "gristmill.v1",
        "gristmill.credentials",
        "gristmill.interceptors",
    ),
    # Sandboxes: the backend protocols, the jail, cgroups, profiles, the jail's layout.
    ("gristmill.isolation",),
    # The server's settings, and logs, metrics and traces configured by them.
    ("gristmill.config", "gristmill.config_*", "gristmill.observability"),
    # One command of the service's own in a sandbox, capped and streamed.
    ("gristmill.steps",),
    # The one API a language plugin imports from, and the registry of languages.
    ("gristmill.languages",),
    # Work that grows with a job's input, on worker processes; which build is running.
    ("gristmill.offload", "gristmill.buildinfo"),
    # Dependencies: resolvers' runs, the environment cache, lockfiles.
    ("gristmill.deps",),
    # One job's run: its build, workspace, sandbox, verdict; the warm pool.
    ("gristmill.jobs",),
    # The gRPC service.
    ("gristmill.server",),
    # Clients of the service, over its contract alone, and how an outcome is shown.
    ("gristmill.client", "gristmill.conformance", "gristmill.render"),
    # The queue worker: a client like any other.
    ("gristmill.queue",),
    # Entry points.
    (
        "gristmill.cli",
        "gristmill.__main__",
        "gristmill.local",
        "gristmill.doctor",
        "gristmill.settings_reference",
    ),
]


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


@cache
def modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The index in LAYERS of the longest name or pattern naming `module` or a package
    holding it (-1: none). The package itself names only its `__init__`, so that a new
    top-level module must be placed."""
    best, index = -1, -1
    for number, names in enumerate(LAYERS):
        for name in names:
            inside = module.startswith(name + ".") and name != "gristmill"
            if (module == name or inside or fnmatch(module, name)) and len(name) > best:
                best, index = len(name), number
    return index


def _type_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes under `if TYPE_CHECKING:`."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for body in node.body
        for inner in ast.walk(body)
    }


def imports(module: str) -> set[str]:
    """The modules of gristmill that `module` imports at run time."""
    tree = ast.parse(modules()[module].read_text())
    skipped = _type_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules() else node.module)
    return {name for name in found if name in modules() and name != module}


def arrows() -> list[tuple[str, str]]:
    return [(source, target) for source in modules() for target in sorted(imports(source))]


def test_every_module_has_a_layer():
    assert [module for module in modules() if layer(module) < 0] == []


def test_no_import_runs_back_up_a_layer():
    upward = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, target in arrows()
        if layer(target) > layer(source) >= 0
    ]
    assert upward == []


def circles() -> list[list[str]]:
    """Each circle of imports found by a depth-first walk, as the path that closes it."""
    graph = {module: imports(module) for module in modules()}
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    return found


def test_no_modules_import_each_other_in_a_circle():
    assert circles() == []


@pytest.mark.parametrize(
    ("source", "target", "upward"),
    [
        ("gristmill.jobs.executor", "gristmill.deps", False),
        ("gristmill.deps", "gristmill.jobs", True),
    ],
)
def test_layers_order_the_packages(source: str, target: str, upward: bool):
    """The check itself: deps is below jobs, so jobs may import deps and not the reverse."""
    assert (layer(target) > layer(source)) is upward


def test_a_new_top_level_module_must_be_placed():
    assert layer("gristmill") == 0
    assert layer("gristmill.somewhere_new") == -1
    assert layer("gristmill.config_schema") == 0 and layer("gristmill.config_access") == 2
