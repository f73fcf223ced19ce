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

import os
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module", params=["process", "nsjail"])
def server(request: pytest.FixtureRequest, feed_url: str) -> Iterator[tuple[str, Path]]:
    """A server's address and work directory; tenants alice and bob by token."""
    with sandbox_work_dir() as work_dir:
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "sandbox_backend": request.param,
            "max_concurrent_jobs": 2,
            "auth.tokens": TOKENS,
            "deps.index_url": feed_url,
            "deps.cache_max_bytes": CACHE_BYTES,
            "deps.tool_cache_max_bytes": TOOL_CACHE_BYTES,
        }
        try:
            running = BackgroundServer(load_config(overrides=overrides))
            address = running.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(f"{request.param}: {unusable}")
        try:
            yield address, work_dir
        finally:
            running.__exit__(None, None, None)


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


def test_no_annotation_processor_runs_when_a_java_job_compiles(
    alice: Client, compile_time_files: dict[str, bytes]
) -> None:
    # JDK 17 ran Proc (JDK 23+ no longer runs processors it was not asked for).
    outcome = alice.execute("java", JAVA_JOB, {}, files=compile_time_files, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == []


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
