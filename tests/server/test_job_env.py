"""What `Job.env` may carry into a wrapper: never what changes the wrapper itself.

The loader's and C library's variables are refused for every language, each language's
own (its interpreter's, runtime's, shell's) by the `[env] refused` of its runtime.toml;
the rest reach the job.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from gristmill.client import Client
from gristmill.errors import InvalidRequest
from gristmill.languages.spec import RuntimeSpec, SpecError, load_spec
from gristmill.server import validate

RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
SPECS = [load_spec(manifest.parent) for manifest in sorted(RUNTIMES.glob("*/runtime.toml"))]


def _named(pattern: str) -> str:
    """A variable `pattern` refuses: itself, or its prefix with a name after it."""
    return pattern[:-1] + "PRELOAD" if pattern.endswith("*") else pattern


REFUSED = [
    pytest.param(spec, _named(pattern), id=f"{spec.name}-{_named(pattern)}")
    for spec in SPECS
    for pattern in (*validate.LOADER_VARIABLES, *spec.env_refused)
]


@pytest.mark.attack("job env: loader and runtime variables")
@pytest.mark.parametrize(("spec", "name"), REFUSED)
def test_every_refused_variable_is_refused_in_its_language_naming_it(
    spec: RuntimeSpec, name: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate.env({"GREETING": "hi", name: "/job/x"}, spec)
    assert refused.value.field == f"job.env[{name!r}]"
    assert name in str(refused.value)


def test_every_language_refuses_its_interpreters_own_variables() -> None:
    """Each wrapper's runtime has its list (`[env] refused`), and it is what was decided."""
    declared = {spec.name: set(spec.env_refused) for spec in SPECS}
    assert declared["python"] == declared["sql"] == {"PYTHON*"}
    assert {"BASH_*", "ENV", "SHELLOPTS", "BASHOPTS", "PS4"} <= declared["bash"]
    assert {"BUN_*", "NODE_OPTIONS"} <= declared["typescript"]
    assert {"GODEBUG", "GOTRACEBACK"} <= declared["go"]
    assert {"JAVA_*", "_JAVA_*", "JDK_*"} <= declared["java"]
    assert {"MONO_*"} <= declared["csharp"]


HARMLESS = {
    "GREETING": "hi",
    "PATH": "/job/bin:/usr/bin:/bin",
    "HOME": "/job",
    "TMPDIR": "/job/tmp",
    "LANG": "C.UTF-8",
    "TZ": "Europe/Paris",
    "IFS": ",",
    "SQL_COMMIT": "1",
    "SQL_DATABASE": "main",
    "SQL_RESULTS": "all",
    "GOMAXPROCS": "1",
    "GOGC": "50",
    "GOMEMLIMIT": "64MiB",
    "NODE_ENV": "production",
    "CLASSPATH": "/job",
    "ld_preload": "/job/x.so",
}


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_the_jobs_own_variables_reach_it_in_every_language(spec: RuntimeSpec) -> None:
    """Among them those the service sets (PATH, HOME, TMPDIR, LANG): every wrapper starts
    its interpreter by absolute path. The loader reads only LD_PRELOAD, not ld_preload."""
    assert validate.env(HARMLESS, spec) == HARMLESS


def test_a_prefix_refuses_the_prefix_alone_and_an_exact_name_only_itself() -> None:
    assert validate.refused_by("PYTHON", ["PYTHON*"]) == "PYTHON*"
    assert validate.refused_by("PYTHONPATH", ["PYTHON*"]) == "PYTHON*"
    assert validate.refused_by("ENVIRONMENT", ["ENV"]) is None
    assert validate.refused_by("MY_PYTHON", ["PYTHON*"]) is None


def _spec_with(tmp_path: Path, env_table: str) -> RuntimeSpec:
    (tmp_path / "runtime.toml").write_text(
        'name = "x"\nextensions = [".x"]\nsource_file = "main.x"\nrun = ["/bin/sh"]\n'
        f'version_command = ["/bin/true"]\n[env]\n{env_table}'
    )
    return load_spec(tmp_path)


@pytest.mark.parametrize(
    "env_table",
    [
        'allowed = ["X"]\n',
        'refused = ["LD_*_X"]\n',
        'refused = ["*"]\n',
        "refused = [1]\n",
        'refused = "XOPTS"\n',  # not a list: read as its letters, X, O, P, T and S
    ],
)
def test_an_env_table_with_an_unknown_key_or_a_malformed_name_is_a_spec_error(
    tmp_path: Path, env_table: str
) -> None:
    with pytest.raises(SpecError):
        _spec_with(tmp_path, env_table)


def test_a_new_language_declares_its_refused_variables_in_its_folder(tmp_path: Path) -> None:
    spec = _spec_with(tmp_path, 'refused = ["X_*", "XOPTS"]\n')
    with pytest.raises(InvalidRequest, match="XOPTS"):
        validate.env({"XOPTS": "-v"}, spec)
    assert validate.env({"XOTHER": "1"}, spec) == {"XOTHER": "1"}


PRELOAD_C = r"""
#include <unistd.h>
__attribute__((constructor)) static void preloaded(void) {
    static const char said[] = "native code preloaded into the wrapper\n";
    write(2, said, sizeof said - 1);
}
"""


@pytest.fixture(scope="module")
def preload_library(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A shared object whose constructor says so on stderr, built here with gcc."""
    folder = tmp_path_factory.mktemp("preload")
    (folder / "preload.c").write_text(PRELOAD_C)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", "preload.so", "preload.c"],
        cwd=folder,
        check=True,
    )
    return (folder / "preload.so").read_bytes()


@pytest.mark.attack("job env: loader and runtime variables")
def test_ld_preload_of_a_library_the_job_ships_is_refused(
    real_server: str, preload_library: bytes
) -> None:
    """The attack: the SQL wrapper holds the relay's token, and a library the job ships,
    preloaded into it, ran native code before the job's statements (the library's words
    were on the job's stderr). Now the request is refused before anything runs."""
    with Client(real_server) as client, pytest.raises(grpc.RpcError) as refused:
        client.execute(
            "sql",
            "select 1 as one\n",
            files={"preload.so": preload_library},
            env={"LD_PRELOAD": "/job/preload.so"},
            timeout_s=120,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job.env['LD_PRELOAD']" in (refused.value.details() or "")
