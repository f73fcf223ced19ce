"""C#'s NuGet dependencies, end to end: real `.nupkg` files built with the real compiler,
served as a NuGet v3 feed over HTTP from a test host (a network namespace of its own:
a resolve step reaches the feed it is configured with, never the host's loopback),
resolved and installed by our client in the resolve sandbox, referenced by mcs and loaded
by mono in the job's.

The feed is laid out as the protocol documents it: a service index naming
`PackageBaseAddress/3.0.0` (the flat container: `{id}/index.json`, the `.nupkg` files)
and `RegistrationsBaseUrl/3.6.0` (each version's catalog entry with its dependency
groups). `Gristmill.Greeting 1.0.0` depends on `Gristmill.Words >= 1.0.0`, of which the
feed has 1.0.0 and 2.0.0: NuGet's lowest applicable version is 1.0.0. Words also
carries a `lib/netcoreapp3.1/` folder of garbage, which Mono must never be given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gristmill.client import Client, outcome_result
from gristmill.config import load_config
from gristmill.errors import SandboxFailure
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir
from tests.hosts import namespaced_host

TIMEOUT_S = 180
MCS = "/usr/bin/mcs"
FEED_PORT = 8080

VOCABULARY = """\
namespace Gristmill.Words {
    public static class Vocabulary { public static string Hello() { return "%s"; } }
}
"""
WORDS = {"1.0.0": VOCABULARY % "hello", "2.0.0": VOCABULARY % "HELLO v2"}
GREETING = """\
namespace Gristmill.Greeting {
    public static class Greeter {
        public static string Greet(string name) {
            return Gristmill.Words.Vocabulary.Hello() + ", " + name;
        }
    }
}
"""
JOB = """\
#r "nuget: Gristmill.Greeting, 1.0.0"
using Gristmill.Greeting;

public class Script
{
    public static object Main(string name)
    {
        return Greeter.Greet(name);
    }
}
"""


def _nuspec(package: str, version: str, dependencies: dict[str, str]) -> str:
    group = "".join(f'<dependency id="{d}" version="{r}" />' for d, r in dependencies.items())
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd">'
        f"<metadata><id>{package}</id><version>{version}</version><authors>gristmill</authors>"
        f"<description>test package</description><dependencies>"
        f'<group targetFramework=".NETFramework4.5">{group}</group></dependencies>'
        "</metadata></package>\n"
    )


class Feed:
    """A NuGet v3 feed in a directory, served by http.server from a test host."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[str, list[dict[str, Any]]] = {}

    def add(
        self,
        package: str,
        version: str,
        source: str,
        dependencies: dict[str, str],
        references: list[Path],
        extra: dict[str, bytes] | None = None,
    ) -> Path:
        build = self.root / "build" / f"{package}.{version}"
        build.mkdir(parents=True)
        (build / "src.cs").write_text(source)
        dll = build / f"{package}.dll"
        argv = [MCS, "-nologo", "-target:library", f"-out:{dll}", str(build / "src.cs")]
        subprocess.run(argv + [f"-r:{r}" for r in references], check=True, capture_output=True)
        lower, lower_version = package.lower(), version.lower()
        folder = self.root / "v3-flatcontainer" / lower / lower_version
        folder.mkdir(parents=True)
        nupkg = folder / f"{lower}.{lower_version}.nupkg"
        with zipfile.ZipFile(nupkg, "w") as archive:
            archive.writestr(f"{package}.nuspec", _nuspec(package, version, dependencies))
            archive.write(dll, f"lib/net45/{package}.dll")
            for name, content in (extra or {}).items():
                archive.writestr(name, content)
        groups = [
            {
                "targetFramework": ".NETFramework4.5",
                "dependencies": [{"id": d, "range": f"[{r}, )"} for d, r in dependencies.items()],
            }
        ]
        self.entries.setdefault(package, []).append(
            {"id": package, "version": version, "dependencyGroups": groups}
        )
        return dll

    def write_indexes(self, base: str) -> None:
        v3 = self.root / "v3"
        v3.mkdir(exist_ok=True)
        (v3 / "index.json").write_text(
            json.dumps(
                {
                    "version": "3.0.0",
                    "resources": [
                        {"@id": f"{base}/v3-flatcontainer/", "@type": "PackageBaseAddress/3.0.0"},
                        {"@id": f"{base}/v3/registration/", "@type": "RegistrationsBaseUrl/3.6.0"},
                    ],
                }
            )
        )
        for package, entries in self.entries.items():
            lower = package.lower()
            flat = self.root / "v3-flatcontainer" / lower / "index.json"
            flat.write_text(json.dumps({"versions": [e["version"] for e in entries]}))
            registration = v3 / "registration" / lower
            registration.mkdir(parents=True, exist_ok=True)
            items = [
                {
                    "@id": f"{base}/v3/registration/{lower}/{e['version']}.json",
                    "catalogEntry": e,
                    "packageContent": f"{base}/v3-flatcontainer/{lower}/{e['version']}/"
                    f"{lower}.{e['version']}.nupkg",
                }
                for e in entries
            ]
            page = {
                "@id": f"{base}/v3/registration/{lower}/index.json#page",
                "count": len(items),
                "lower": entries[0]["version"],
                "upper": entries[-1]["version"],
                "items": items,
            }
            (registration / "index.json").write_text(json.dumps({"count": 1, "items": [page]}))


@pytest.fixture(scope="module")
def feed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which(MCS) is None:
        pytest.skip("Mono is not installed (runtimes/csharp/install.sh)")
    root = tmp_path_factory.mktemp("feed")
    root.chmod(0o755)
    server = [sys.executable, "-m", "http.server", str(FEED_PORT), "--bind", "{address}"]
    with namespaced_host([*server, "--directory", str(root)], FEED_PORT) as address:
        base = f"http://{address}:{FEED_PORT}"
        feed = Feed(root)
        words = feed.add(
            "Gristmill.Words",
            "1.0.0",
            WORDS["1.0.0"],
            {},
            [],
            {"lib/netcoreapp3.1/Gristmill.Words.dll": b"not an assembly"},
        )
        feed.add("Gristmill.Words", "2.0.0", WORDS["2.0.0"], {}, [])
        feed.add("Gristmill.Greeting", "1.0.0", GREETING, {"Gristmill.Words": "1.0.0"}, [words])
        feed.write_indexes(base)
        yield f"{base}/v3/index.json"


@pytest.fixture(scope="module", params=["process", "nsjail"])
def client(request: pytest.FixtureRequest, feed_url: str) -> Iterator[Client]:
    with sandbox_work_dir() as work_dir:
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "sandbox_backend": request.param,
            "max_concurrent_jobs": 2,
            "deps.index_url": feed_url,
        }
        try:
            server = BackgroundServer(load_config(overrides=overrides))
            address = server.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(f"{request.param}: {unusable}")
        try:
            with Client(address) as client:
                yield client
        finally:
            server.__exit__(None, None, None)


def run(client: Client, code: str, args: dict[str, Any] | None = None, **job: Any) -> pb.Outcome:
    return client.execute("csharp", code, args or {}, timeout_s=TIMEOUT_S, **job)


def test_a_package_and_its_dependency_resolve_install_and_run(client: Client) -> None:
    outcome = run(client, JOB, {"name": "gristmill"})
    assert outcome.verdict == pb.SUCCESS, outcome
    # Words 1.0.0, not 2.0.0: the lowest version Greeting's range admits.
    assert outcome_result(outcome) == "hello, gristmill"
    lock = json.loads(outcome.lockfile.content)
    assert [(p["id"], p["version"]) for p in lock["packages"]] == [
        ("Gristmill.Greeting", "1.0.0"),
        ("Gristmill.Words", "1.0.0"),
    ]
    assert all(len(base64.b64decode(p["sha512"])) == 64 for p in lock["packages"])

    again = run(client, JOB, {"name": "again"})
    assert again.verdict == pb.SUCCESS, again
    assert outcome_result(again) == "hello, again"
    assert again.environment.cached and again.build.cached
    assert again.environment.key == outcome.environment.key


def test_a_direct_reference_nearer_the_job_wins(client: Client) -> None:
    code = JOB.replace(
        '#r "nuget: Gristmill.Greeting, 1.0.0"',
        '#r "nuget: Gristmill.Greeting, 1.0.0"\n#r "nuget: Gristmill.Words, 2.0.0"',
    )
    outcome = run(client, code, {"name": "v2"})
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == "HELLO v2, v2"


def test_a_package_the_feed_lacks_is_a_dependency_error(client: Client) -> None:
    code = '#r "nuget: Gristmill.NoSuchPackage, 1.0.0"\n' + JOB.split("\n", 1)[1]
    outcome = run(client, code, {"name": "x"})
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "Gristmill.NoSuchPackage" in outcome.error.message


def test_a_lockfile_whose_hash_does_not_match_is_refused(client: Client) -> None:
    first = run(client, JOB, {"name": "x"})
    assert first.verdict == pb.SUCCESS, first
    lock = json.loads(first.lockfile.content)
    lock["packages"][1]["sha512"] = base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    tampered = pb.Lockfile(
        language="csharp", format=first.lockfile.format, content=json.dumps(lock)
    )
    outcome = run(client, JOB, {"name": "x"}, lockfile=tampered)
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "SHA-512" in outcome.error.message


def test_installed_packages_are_read_only_to_the_job(client: Client) -> None:
    code = (
        '#r "nuget: Gristmill.Greeting, 1.0.0"\n'
        "using System;\nusing System.IO;\n"
        "public class Script {\n"
        "    public static object Main() {\n"
        '        var lib = Environment.GetEnvironmentVariable("GRISTMILL_ENVIRONMENT") + "/lib";\n'
        '        try { File.WriteAllText(lib + "/Gristmill.Words.dll", "planted"); }\n'
        "        catch (Exception error) { return error.GetType().Name; }\n"
        '        return "written";\n'
        "    }\n"
        "}\n"
    )
    outcome = run(client, code)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) in ("UnauthorizedAccessException", "IOException")


def test_resolve_gives_the_lockfile_a_job_then_replays_without_resolving(client: Client) -> None:
    code = JOB.replace("Greeter.Greet(name)", 'Greeter.Greet(name) + "!"')
    resolved = client.resolve("csharp", code, timeout_s=TIMEOUT_S)
    assert not resolved.HasField("error"), resolved
    assert [d.name for d in resolved.dependencies] == ["Gristmill.Greeting"]
    outcome = run(client, code, {"name": "replayed"}, lockfile=resolved.lockfile)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == "hello, replayed!"
    assert outcome.usage.phases.resolve_ms == 0
    assert outcome.lockfile.content == resolved.lockfile.content


def test_a_lockfile_naming_a_url_is_refused_before_anything_runs(client: Client) -> None:
    lock = {
        "version": 1,
        "feed": "http://127.0.0.1:1/v3/index.json",
        "packages": [{"id": "http://evil/x.nupkg", "version": "1.0.0", "sha512": "A" * 86 + "=="}],
    }
    tampered = pb.Lockfile(language="csharp", content=json.dumps(lock))
    with pytest.raises(grpc.RpcError) as refused:
        run(client, JOB, {"name": "x"}, lockfile=tampered)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job.lockfile.content" in (refused.value.details() or "")
