"""Tenants share the caches, never what one of them can write: attacks through the real
server, sandbox, resolver and compiler, on both backends.

What tenants share, and who writes it:

- environments (`deps/environments`): written only by an install step (the resolver,
  no job's code), keyed by the lockfile's hash, sealed (the service's own, read-only to
  the jail's user) and mounted read-only;
- build outputs (`deps/builds`): written by a build step, keyed by every input of it
  (code, files, generated files, environment, toolchain, the step itself), never the
  job's env or limits, which the build step does not get: a tenant can produce only the
  entry that the same inputs would produce anyway; sealed and mounted read-only;
- the resolvers' download caches (`deps/tool-cache`): written by resolve and install
  steps only, which run no job's code.

The feed is a NuGet v3 feed on a test host of its own (`tests.languages.test_csharp_nuget`),
with two hostile packages besides the good ones: one whose extraction is a bomb (64 MiB
of zeros in a few hundred KiB), and one whose download is bigger than the download
cache's budget. Each must end in DEPENDENCY_ERROR naming the budget it broke, leave
nothing in the cache, and leave the server serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gristmill.client import Client, Credentials, outcome_result
from gristmill.config import load_config
from gristmill.deps.cache import tree_size
from gristmill.errors import SandboxFailure
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir
from tests.hosts import namespaced_host
from tests.languages.test_csharp_nuget import FEED_PORT, GREETING, JOB, MCS, WORDS, Feed

TIMEOUT_S = 180
MiB = 1024 * 1024
CACHE_BYTES = 32 * MiB
"""The environments' budget: small, so that the bomb passes it."""
TOOL_CACHE_BYTES = 8 * MiB
"""The download cache's budget: smaller, so that the bulky package's download passes it
(and not its extraction, which passes only this one)."""
TOKENS = "alice:a-token bob:b-token"
LIBRARY = (
    "namespace Gristmill.%s { public static class It { public static int One() { return 1; } } }"
)


def deflate(nupkg: Path) -> None:
    """Compresses a package `Feed` stored: what a registry serves is what the job chose."""
    with zipfile.ZipFile(nupkg) as stored:
        members = [(info.filename, stored.read(info)) for info in stored.infolist()]
    with zipfile.ZipFile(nupkg, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)


@pytest.fixture(scope="module")
def feed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which(MCS) is None:
        pytest.skip("Mono is not installed (runtimes/csharp/install.sh)")
    root = tmp_path_factory.mktemp("feed")
    root.chmod(0o755)
    server = [sys.executable, "-m", "http.server", str(FEED_PORT), "--bind", "{address}"]
    with namespaced_host([*server, "--directory", str(root)], FEED_PORT, tag=3) as address:
        base = f"http://{address}:{FEED_PORT}"
        feed = Feed(root)
        words = feed.add("Gristmill.Words", "1.0.0", WORDS["1.0.0"], {}, [])
        feed.add("Gristmill.Greeting", "1.0.0", GREETING, {"Gristmill.Words": "1.0.0"}, [words])
        # Deflated, 64 MiB of zeros is a quarter of a MiB to download.
        zeros = {"content/zeros": bytes(64 * MiB)}
        feed.add("Gristmill.Bomb", "1.0.0", LIBRARY % "Bomb", {}, [], zeros)
        deflate(
            root / "v3-flatcontainer" / "gristmill.bomb" / "1.0.0" / "gristmill.bomb.1.0.0.nupkg"
        )
        # Random bytes do not deflate: the download itself is past the budget.
        noise = {"content/noise": os.urandom(12 * MiB)}
        feed.add("Gristmill.Bulky", "1.0.0", LIBRARY % "Bulky", {}, [], noise)
        feed.write_indexes(base)
        yield f"{base}/v3/index.json"


@contextlib.contextmanager
def serving(settings: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    """A server with these settings, tenants alice and bob by token, on a work directory
    of its own: its address and that directory (skipped where the sandbox cannot run)."""
    with sandbox_work_dir() as work_dir:
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "max_concurrent_jobs": 2,
            "auth.tokens": TOKENS,
            "deps.tool_cache_max_bytes": TOOL_CACHE_BYTES,
            **settings,
        }
        try:
            running = BackgroundServer(load_config(overrides=overrides))
            address = running.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(f"{overrides.get('sandbox_backend', 'the sandbox')}: {unusable}")
        try:
            yield address, work_dir
        finally:
            running.__exit__(None, None, None)


@pytest.fixture(scope="module", params=["process", "nsjail"])
def server(request: pytest.FixtureRequest, feed_url: str) -> Iterator[tuple[str, Path]]:
    """A server's address and work directory, from the NuGet feed, on each backend."""
    settings = {
        "sandbox_backend": request.param,
        "deps.index_url": feed_url,
        "deps.cache_max_bytes": CACHE_BYTES,
    }
    with serving(settings) as served:
        yield served


@pytest.fixture(scope="module")
def alice(server: tuple[str, Path]) -> Iterator[Client]:
    with Client(server[0], credentials=Credentials(token="a-token")) as client:
        yield client


@pytest.fixture(scope="module")
def bob(server: tuple[str, Path]) -> Iterator[Client]:
    with Client(server[0], credentials=Credentials(token="b-token")) as client:
        yield client


def run(client: Client, code: str, args: dict[str, Any] | None = None, **job: Any) -> pb.Outcome:
    return client.execute("csharp", code, args or {}, timeout_s=TIMEOUT_S, **job)


def uses(package: str) -> str:
    """A job of the package's, which runs (result 1) wherever the package is installed."""
    return (
        f'#r "nuget: Gristmill.{package}, 1.0.0"\n'
        "public class Script {\n"
        f"    public static object Main() {{ return Gristmill.{package}.It.One(); }}\n"
        "}\n"
    )


def assert_nothing_kept(work_dir: Path) -> None:
    """Nothing half-built is left, and both caches are within their budgets."""
    environments = work_dir / "deps" / "environments"
    assert list((environments / "tmp").iterdir()) == []
    assert tree_size(environments / "envs") <= CACHE_BYTES
    assert tree_size(work_dir / "deps" / "tool-cache" / "nuget") <= TOOL_CACHE_BYTES


@pytest.mark.attack("install scripts and disk")
def test_an_install_whose_extraction_fills_the_disk_is_stopped_and_leaves_nothing(
    alice: Client, bob: Client, server: tuple[str, Path]
) -> None:
    outcome = run(alice, uses("Bomb"))
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert f"more than {CACHE_BYTES} bytes (deps.cache_max_bytes)" in outcome.error.message
    assert_nothing_kept(server[1])
    # The server keeps serving, the other tenant first.
    good = run(bob, JOB, {"name": "bob"})
    assert good.verdict == pb.SUCCESS, good
    assert outcome_result(good) == "hello, bob"


@pytest.mark.attack("install scripts and disk")
def test_a_download_past_the_download_cache_budget_is_stopped_and_emptied(
    alice: Client, server: tuple[str, Path]
) -> None:
    outcome = run(alice, uses("Bulky"))
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    message = outcome.error.message
    assert f"more than {TOOL_CACHE_BYTES} bytes (deps.tool_cache_max_bytes)" in message
    assert_nothing_kept(server[1])


WRITER = """\
#r "nuget: Gristmill.Greeting, 1.0.0"
using System;
using System.Collections.Generic;
using System.IO;

public class Script
{
    static string Try(Action write)
    {
        try { write(); return "written"; }
        catch (Exception e) { return e.GetType().Name; }
    }

    public static object Main()
    {
        var tried = new Dictionary<string, string>();
        tried["overwrite a dependency"] = Try(() =>
            File.WriteAllText("/gristmill/env/lib/Gristmill.Words.dll", "poison"));
        tried["add to the environment"] = Try(() =>
            File.WriteAllText("/gristmill/env/lib/Gristmill.Extra.dll", "poison"));
        tried["remove from the environment"] = Try(() =>
            File.Delete("/gristmill/env/references.rsp"));
        tried["add a folder"] = Try(() => Directory.CreateDirectory("/gristmill/env/lib/x"));
        tried["overwrite the build"] = Try(() =>
            File.WriteAllText("/gristmill/build/job.exe", "poison"));
        tried["add to the build"] = Try(() =>
            File.WriteAllText("/gristmill/build/other.exe", "poison"));
        return tried;
    }
}
"""


@pytest.mark.attack("cross-tenant cache poisoning")
def test_a_job_cannot_write_into_the_environment_or_build_another_tenant_reads(
    alice: Client, bob: Client
) -> None:
    first = run(bob, JOB, {"name": "bob"})
    assert first.verdict == pb.SUCCESS, first
    attack = run(alice, WRITER)
    assert attack.verdict == pb.SUCCESS, attack
    tried = outcome_result(attack)
    assert "written" not in tried.values(), tried
    # Alice's job had bob's environment mounted (the same lockfile); bob's next job, from
    # that environment and his own cached build, is unchanged.
    assert attack.environment.key == first.environment.key
    again = run(bob, JOB, {"name": "bob"})
    assert again.verdict == pb.SUCCESS, again
    assert outcome_result(again) == "hello, bob"
    assert again.environment.cached and again.build.cached


# Code that runs at compile time, as a Java job's files could carry it: a javac plugin
# (run for `-Xplugin:<its name>`, an option a file name could become) and an annotation
# processor (javac runs any on its class path, by META-INF/services, before JDK 23). Each
# leaves a mark in the build output if it ran.
COMPILE_TIME = {
    "Evil": """\
public class Evil implements com.sun.source.util.Plugin {
    public String getName() { return "Evil.java"; }
    public void init(com.sun.source.util.JavacTask task, String... args) { Mark.leave("plugin"); }
}
""",
    "Proc": """\
@javax.annotation.processing.SupportedAnnotationTypes("*")
public class Proc extends javax.annotation.processing.AbstractProcessor {
    public boolean process(java.util.Set<? extends javax.lang.model.element.TypeElement> a,
            javax.annotation.processing.RoundEnvironment round) {
        Mark.leave("processor");
        return false;
    }
    public javax.lang.model.SourceVersion getSupportedSourceVersion() {
        return javax.lang.model.SourceVersion.latestSupported();
    }
}
""",
    "Mark": """\
public class Mark {
    static void leave(String what) {
        try {
            java.nio.file.Files.writeString(java.nio.file.Path.of("/gristmill/build", what), what);
        } catch (java.io.IOException e) {
            throw new RuntimeException(e);
        }
    }
}
""",
}
JAVA_JOB = """\
public class Main {
    public static Object main() {
        java.util.List<String> ran = new java.util.ArrayList<>();
        for (String what : new String[] {"plugin", "processor"}) {
            if (new java.io.File("/gristmill/build", what).exists()) ran.add(what);
        }
        return ran;
    }
}
"""


@pytest.fixture(scope="module")
def compile_time_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The classes of `COMPILE_TIME`, where javac looks for them in a Java build (its
    class path is the sources' folder), and the services files naming them."""
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("no JDK")
    source = tmp_path_factory.mktemp("compile-time")
    for name, text in COMPILE_TIME.items():
        (source / f"{name}.java").write_text(text)
    classes = source / "classes"
    argv = [javac, "--release", "17", "-d", str(classes), *map(str, source.glob("*.java"))]
    subprocess.run(argv, check=True, capture_output=True)
    files = {f"gristmill-src/{c.name}": c.read_bytes() for c in classes.glob("*.class")}
    services = "gristmill-src/META-INF/services"
    files[f"{services}/com.sun.source.util.Plugin"] = b"Evil\n"
    files[f"{services}/javax.annotation.processing.Processor"] = b"Proc\n"
    return files


@pytest.mark.attack("cross-tenant cache poisoning")
def test_no_annotation_processor_runs_when_a_java_job_compiles(
    alice: Client, compile_time_files: dict[str, bytes]
) -> None:
    # JDK 17 ran Proc (JDK 23+ no longer runs processors it was not asked for).
    outcome = alice.execute("java", JAVA_JOB, {}, files=compile_time_files, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == []


@pytest.mark.attack("cross-tenant cache poisoning")
@pytest.mark.parametrize(
    ("name", "beside"),
    [("-Xplugin:Evil.java", {}), ("@options.java", {"options.java": b"-Xplugin:Evil.java\n"})],
    ids=["plugin", "argument-file"],
)
def test_no_file_name_of_a_java_job_becomes_an_option_of_javac(
    alice: Client, compile_time_files: dict[str, bytes], name: str, beside: dict[str, bytes]
) -> None:
    # -Xplugin:Evil.java made javac run the plugin on every JDK (the job then answered
    # ["plugin"]); @options.java made it read options from options.java.
    files = {
        **compile_time_files,
        f"gristmill-src/{name}": b"class Unused {}\n",
        **{f"gristmill-src/{path}": content for path, content in beside.items()},
    }
    outcome = alice.execute("java", JAVA_JOB, {}, files=files, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.COMPILE_ERROR, outcome
    assert f"{name}: a Java file's name may not start with '-' or '@'" in outcome.error.message


@pytest.mark.attack("cross-tenant cache poisoning")
@pytest.mark.parametrize("name", ["@options.cs", "-out:other.cs"])
def test_no_file_name_of_a_csharp_job_becomes_an_option_of_mcs(alice: Client, name: str) -> None:
    # mcs runs no code of the job's, but a name starting with '-' was an option of its
    # (here the output elsewhere), and @options.cs made it read options from options.cs.
    files = {name: "class Unused {}\n"}
    outcome = run(
        alice, "public class Script { public static object Main() { return 1; } }\n", files=files
    )
    assert outcome.verdict == pb.COMPILE_ERROR, outcome
    assert f"{name}: a C# file's name may not start with '-' or '@'" in outcome.error.message


# Packages built from source (`deps.allow_source_builds`): an sdist's build code runs in
# the install step, with the download cache writable. This PEP 517 backend of the
# standard library's only is that build code: it builds a wheel by hand, and first does
# what the package's ACTION says to the download cache (/gristmill/cache).
BACKEND = """\
import base64, hashlib, os, zipfile

NAME, ACTION = "@NAME@", "@ACTION@"
METADATA = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: 1.0\\n"
WHEEL = "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if ACTION == "plant":
        with open("/gristmill/cache/planted-by-a-build", "w") as planted:
            planted.write("a wheel another tenant would install")
    elif ACTION == "flood":
        with open("/gristmill/cache/flood", "wb") as flood:
            for _ in range(64):
                flood.write(bytes(1 << 20))
    elif ACTION == "allocate":  # 64 MiB of disk to a file of size 0 (fallocate KEEP_SIZE)
        import ctypes

        with open("/gristmill/cache/hoard", "wb") as hoard:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.fallocate(hoard.fileno(), 1, ctypes.c_long(0), ctypes.c_long(64 << 20)):
                raise OSError(ctypes.get_errno(), "fallocate")
    files = {
        f"{NAME}/__init__.py": b"VALUE = 1\\n",
        f"{NAME}-1.0.dist-info/METADATA": METADATA.encode(),
        f"{NAME}-1.0.dist-info/WHEEL": WHEEL.encode(),
    }
    record = [f"{NAME}-1.0.dist-info/RECORD,,"]
    wheel = f"{NAME}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        archive.writestr(f"{NAME}-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
    return wheel
"""
PYPROJECT = """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "@NAME@"
version = "1.0"
"""
SDISTS = {"plantpkg": "plant", "floodpkg": "flood", "hoardpkg": "allocate"}
INDEX_PORT = 8081


def sdist(index: Path, name: str, action: str) -> None:
    """`name` 1.0 as an sdist only, in a PEP 503 simple index under `index`."""
    folder = index / name
    folder.mkdir(parents=True)
    archive = folder / f"{name}-1.0.tar.gz"
    files = {
        "pyproject.toml": PYPROJECT.replace("@NAME@", name),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        "backend.py": BACKEND.replace("@NAME@", name).replace("@ACTION@", action),
    }
    with tarfile.open(archive, "w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{name}-1.0/{path}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    link = f'<a href="{archive.name}#sha256={sha256}">{archive.name}</a>'
    (folder / "index.html").write_text(f"<html><body>{link}</body></html>\n")


@pytest.fixture(scope="module")
def sdist_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server that builds packages from source, from a simple index on a test host
    holding `SDISTS`; its address and work directory. Tenants alice and bob by token."""
    root = tmp_path_factory.mktemp("index")
    root.chmod(0o755)
    for name, action in SDISTS.items():
        sdist(root / "simple", name, action)
    http = [sys.executable, "-m", "http.server", str(INDEX_PORT), "--bind", "{address}"]
    with namespaced_host([*http, "--directory", str(root)], INDEX_PORT, tag=4) as address:
        index = f"http://{address}:{INDEX_PORT}/simple"
        with serving({"deps.index_url": index, "deps.allow_source_builds": True}) as served:
            yield served


def python_job(package: str) -> str:
    return (
        f'# /// script\n# dependencies = ["{package}==1.0"]\n# ///\n'
        f"import {package}\n\ndef main():\n    return {package}.VALUE\n"
    )


def tool_cache(work_dir: Path, tenant: str | None = None) -> Path:
    """uv's download cache: everyone's, or `tenant`'s own (`DependencyManager._partition`)."""
    root = work_dir / "deps" / "tool-cache"
    if tenant is None:
        return root / "uv"
    return root / "tenants" / hashlib.sha256(tenant.encode()).hexdigest()[:32] / "uv"


@pytest.mark.attack("cross-tenant cache poisoning")
def test_a_packages_build_code_writes_only_its_own_tenants_caches(
    sdist_server: tuple[str, Path],
) -> None:
    address, work_dir = sdist_server
    outcomes = {}
    for tenant, token in (("alice", "a-token"), ("bob", "b-token")):
        with Client(address, credentials=Credentials(token=token)) as client:
            outcome = client.execute("python", python_job("plantpkg"), timeout_s=TIMEOUT_S)
        assert outcome.verdict == pb.SUCCESS, outcome
        assert outcome_result(outcome) == 1
        outcomes[tenant] = outcome
        # What alice's package planted is in her download cache only; bob's install did
        # not read it (his own build planted his).
        assert (tool_cache(work_dir, tenant) / "planted-by-a-build").exists()
    assert not (tool_cache(work_dir) / "planted-by-a-build").exists()
    # Nor does bob get the environment alice's install built: his own is built for him.
    alice, bob = outcomes["alice"], outcomes["bob"]
    assert bob.environment.key != alice.environment.key
    assert not bob.environment.cached


@pytest.mark.attack("install scripts and disk")
@pytest.mark.parametrize("package", ["floodpkg", "hoardpkg"], ids=["written", "allocated"])
def test_a_packages_build_code_that_floods_the_download_cache_is_stopped(
    sdist_server: tuple[str, Path], package: str
) -> None:
    # hoardpkg's disk, allocated past the end of an empty file, was not counted (SUCCESS).
    address, work_dir = sdist_server
    with Client(address, credentials=Credentials(token="a-token")) as alice:
        outcome = alice.execute("python", python_job(package), timeout_s=TIMEOUT_S)
        assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
        message = outcome.error.message
        assert f"more than {TOOL_CACHE_BYTES} bytes (deps.tool_cache_max_bytes)" in message
        assert tree_size(tool_cache(work_dir, "alice")) <= TOOL_CACHE_BYTES
        assert list((work_dir / "deps" / "environments" / "tmp").iterdir()) == []
        # The server keeps serving.
        served = alice.execute("python", python_job("plantpkg"), timeout_s=TIMEOUT_S)
        assert served.verdict == pb.SUCCESS, served
