"""Hostile lockfiles given back in `Job.lockfile`, one table per language: each is
refused before anything is installed, as INVALID_ARGUMENT on `job.lockfile.content`
naming the line (its number and a bounded excerpt of it).

Each case is a lockfile the language's resolver could have written, with one line
changed or added; the rules are the language's own (`check_lockfile` in its folder),
applied as the request's validation applies them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from gristmill.client import Client
from gristmill.config import load_config
from gristmill.errors import InvalidRequest
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.registry import Registry
from gristmill.languages.resolver import ChecksLockfiles, ToolContext
from gristmill.model import Lockfile
from gristmill.server import BackgroundServer, validate
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

TIMEOUT_S = 300
_REGISTRY = Registry()
Case = tuple[str, str, int, str]  # id, lockfile, the line refused, what the refusal says


def validated(language: str, content: str) -> Lockfile:
    """`content` through the request's validation with the language's own rules, as
    `Execute` gives it."""
    resolver = _REGISTRY.get(language).plugin.resolver()
    assert isinstance(resolver, ChecksLockfiles) and resolver is not None, language
    return validate.lockfile(
        Lockfile("", "", content),
        "",
        language,
        resolver.lock_format,
        "job.lockfile",
        resolver.check_lockfile,
    )


def replaced(base: str, number: int, line: str) -> str:
    """`base` with line `number` replaced by `line` (which may hold several)."""
    lines = base.splitlines()
    lines[number - 1] = line
    return "\n".join(lines) + "\n"


def inserted(base: str, number: int, line: str) -> str:
    """`base` with `line` inserted so that it is line `number`."""
    lines = base.splitlines()
    lines.insert(number - 1, line)
    return "\n".join(lines) + "\n"


# --- Python (uv pip compile --generate-hashes) --------------------------------------
HASH = "--hash=sha256:" + "ab" * 32
PYTHON = f"""\
certifi==2024.2.2 \\
    {HASH}
    # via requests
requests[socks]==2.31.0 \\
    {HASH}
    # via -r requirements.in
"""
PYTHON_CASES: list[Case] = [
    ("url", inserted(PYTHON, 4, f"evil @ http://127.0.0.1:1/evil-1.0.tar.gz {HASH}"), 4, "name=="),
    ("file url", inserted(PYTHON, 4, f"evil @ file:///tmp/evil.tar.gz {HASH}"), 4, "name=="),
    ("vcs", inserted(PYTHON, 4, f"git+https://github.com/evil/evil#egg=evil {HASH}"), 4, "name=="),
    ("path", inserted(PYTHON, 4, f"./evil-1.0.tar.gz {HASH}"), 4, "name=="),
    ("editable", inserted(PYTHON, 4, f"-e ./evil {HASH}"), 4, "name=="),
    ("index url", inserted(PYTHON, 1, "--index-url http://127.0.0.1:1/simple"), 1, "name=="),
    ("extra index", inserted(PYTHON, 4, "--extra-index-url=http://127.0.0.1:1/"), 4, "name=="),
    ("find links", inserted(PYTHON, 4, "--find-links /tmp"), 4, "name=="),
    ("requirement file", inserted(PYTHON, 4, "-r other.txt"), 4, "name=="),
    ("constraint file", inserted(PYTHON, 4, "-c constraints.txt"), 4, "name=="),
    ("range", replaced(PYTHON, 4, "requests>=2 \\"), 4, "name=="),
    ("option on a pin", replaced(PYTHON, 5, f"    {HASH} --index-url=http://x/"), 4, "--index"),
    ("no binary", replaced(PYTHON, 5, f"    {HASH} --no-binary :all:"), 4, "--no-binary"),
    ("no hash", replaced(PYTHON, 1, "certifi==2024.2.2"), 1, "has no `--hash"),
    ("md5 hash", replaced(PYTHON, 2, f"    --hash=md5:{'0' * 32}"), 1, "is not `--hash"),
]

# --- Go (go.mod + go.sum) -----------------------------------------------------------
SUM = "h1:" + "A" * 43 + "="
OTHER_SUM = "h1:" + "B" * 43 + "="
GO = f"""\
-- go.mod --
module gristmill.job

go 1.26

require github.com/google/uuid v1.6.0
-- go.sum --
github.com/google/uuid v1.6.0 {SUM}
github.com/google/uuid v1.6.0/go.mod {SUM}
"""
# What `go mod tidy` wrote here for testify, otel/trace and x/text: a `go 1.26.0` line,
# two require blocks, and go.sum hashes of modules go.mod does not list (go-cmp).
GO_TIDY = """\
-- go.mod --
module gristmill.job

go 1.26.0

require (
	github.com/stretchr/testify v1.12.1
	go.opentelemetry.io/otel/trace v1.47.0
	golang.org/x/text v0.44.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	go.opentelemetry.io/otel v1.47.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
-- go.sum --
github.com/cespare/xxhash/v2 v2.3.0 h1:UL815xU9SqsFlibzuggzjXhog7bL6oX9BbNZnL2UFvs=
github.com/cespare/xxhash/v2 v2.3.0/go.mod h1:VGX0DQ3Q6kWi7AoAeZDth3/j3BFtOZR5XLFGgcrjCOs=
github.com/google/go-cmp v0.7.0 h1:wk8382ETsv4JYUZwIsn6YpYiWiBsYLSJiTsyBybVuN8=
github.com/google/go-cmp v0.7.0/go.mod h1:pXiqmnSA92OHEEa9HXL2W4E7lf9JzCmGVUdgjX3N/iU=
github.com/stretchr/testify v1.12.1 h1:EuwCh5fleGS7H32xRwO3wRGT7DxrDhLAT6FF8MpWDWE=
github.com/stretchr/testify v1.12.1/go.mod h1:MDEgiDPPsNp5cuIrHPPCyornHKgEVbtFUmoNlxoYthg=
go.opentelemetry.io/otel v1.47.0 h1:j7ALJ/zgkS7Z6aeJW09p8VC9804bC+PpeTfCD4XPnOM=
go.opentelemetry.io/otel v1.47.0/go.mod h1:8wS9O2qfXrYrzp6hIF/HOYJJf/wIhFPhR2xLuP+iXQU=
go.opentelemetry.io/otel/trace v1.47.0 h1:JOjX/Oci8K94QHddo+bbfya/Ai/nf6/dt9ZfrFNWSrM=
go.opentelemetry.io/otel/trace v1.47.0/go.mod h1:jNaSLa2PZEYFG6fRjJABAu+bw4FS08uDmPg28lTghu0=
go.yaml.in/yaml/v3 v3.0.5 h1:N6y/pJk8buWs9NY5ERU2HSMfm+IuD/OtfdAnq6kESPw=
go.yaml.in/yaml/v3 v3.0.5/go.mod h1:HVTZu1O7/Vkt2N+BFy8Zza+lnLsABggaTM2ZpNIGuKg=
golang.org/x/text v0.44.0 h1:YItdp/mQNGnsmrgpcdA5yQ3bnRxCfo/Tj/iByGW9GGo=
golang.org/x/text v0.44.0/go.mod h1:S4FR1waQ9LbjQTls97SyRjDaUUVkaM+cXwwuG/G+MwY=
"""
GO_CASES: list[Case] = [
    ("before go.mod", inserted(GO, 1, "GOFLAGS=-mod=mod"), 1, "before the section"),
    ("replace path", inserted(GO, 7, "replace github.com/google/uuid => ../evil"), 7, "'replace'"),
    (
        "replace module",
        inserted(GO, 7, "replace github.com/google/uuid v1.6.0 => example.com/evil v1.0.0"),
        7,
        "'replace'",
    ),
    ("replace block", inserted(GO, 7, "replace (\n\tgithub.com/google/uuid => /tmp\n)"), 7, "'re"),
    ("exclude", inserted(GO, 7, "exclude github.com/google/uuid v1.5.0"), 7, "'exclude'"),
    ("retract", inserted(GO, 7, "retract v0.0.1"), 7, "'retract'"),
    ("godebug", inserted(GO, 5, "godebug default=go1.20"), 5, "'godebug'"),
    ("tool", inserted(GO, 7, "tool example.com/evil/cmd"), 7, "'tool'"),
    ("another module", replaced(GO, 2, "module example.com/x"), 2, "module must be"),
    ("newer go", replaced(GO, 4, "go 1.99"), 4, "newer Go"),
    ("newer toolchain", inserted(GO, 5, "toolchain go1.99.1"), 5, "newer Go"),
    ("toolchain name", inserted(GO, 5, "toolchain default"), 5, "not a Go version"),
    ("branch", replaced(GO, 6, "require github.com/google/uuid master"), 6, "not a pinned"),
    ("required twice", inserted(GO, 7, "require github.com/google/uuid v1.5.0"), 7, "already"),
    ("unclosed block", replaced(GO, 6, "require (\n\tgithub.com/google/uuid v1.6.0"), 0, "closed"),
    ("no hash", replaced(GO, 8, ""), 6, "no hash in go.sum"),
    ("second hash", inserted(GO, 10, f"github.com/google/uuid v1.6.0 {OTHER_SUM}"), 10, "second"),
    ("not a hash", replaced(GO, 8, "github.com/google/uuid v1.6.0 sha256:abc"), 8, "module hash"),
    ("go.work", inserted(GO, 10, "-- go.work --\ngo 1.26\nuse ../evil"), 10, "module hash"),
]

# --- TypeScript (bun.lock) ----------------------------------------------------------
INTEGRITY = "sha512-" + "A" * 86 + "=="
BUN = f"""\
{{
  "lockfileVersion": 1,
  "workspaces": {{
    "": {{
      "name": "gristmill-job",
      "dependencies": {{
        "lodash": "^4",
      }},
    }},
  }},
  "packages": {{
    "lodash": ["lodash@4.17.21", "", {{}}, "{INTEGRITY}"],
  }}
}}
"""


def bun_package(entry: list[object]) -> str:
    return replaced(BUN, 12, f'    "lodash": {json.dumps(entry)},')


BUN_CASES: list[Case] = [
    ("file", bun_package(["lodash@file:../x", {}]), 12, "registry package"),
    ("link", bun_package(["lodash@link:x", {}]), 12, "registry package"),
    ("git", bun_package(["lodash@git+https://x/y.git#a", "", {}, INTEGRITY]), 12, "name@version"),
    ("github", bun_package(["lodash@github:o/r#a", {}, "o-r-a"]), 12, "registry package"),
    ("tarball", bun_package(["lodash@https://x/lodash.tgz", {}]), 12, "registry package"),
    ("workspace package", bun_package(["lodash@workspace:p/lodash"]), 12, "registry package"),
    ("no integrity", bun_package(["lodash@4.17.21", "", {}, ""]), 12, "integrity"),
    ("bad integrity", bun_package(["lodash@4.17.21", "", {}, "sha512-x"]), 12, "integrity"),
    ("sha1", bun_package(["lodash@4.17.21", "", {}, "sha1-" + "A" * 27 + "="]), 12, "integrity"),
    ("registry", bun_package(["lodash@4.17.21", "http://x/", {}, INTEGRITY]), 12, "configured"),
    ("alias", bun_package(["underscore@1.13.6", "", {}, INTEGRITY]), 12, "alias"),
    (
        "scripts",
        bun_package(["lodash@4.17.21", "", {"scripts": {"postinstall": "x"}}, INTEGRITY]),
        12,
        "unknown keys",
    ),
    ("workspace", inserted(BUN, 10, '    "packages/evil": { "name": "evil" },'), 10, "root"),
    ("root range", replaced(BUN, 7, '        "lodash": "file:../x",'), 7, "version range"),
    ("root github", replaced(BUN, 7, '        "lodash": "github:o/r",'), 7, "version range"),
    ("trusted", inserted(BUN, 2, '  "trustedDependencies": ["lodash"],'), 2, "refused keys"),
    ("overrides", inserted(BUN, 2, '  "overrides": { "lodash": "file:../x" },'), 2, "refused keys"),
    ("patched", inserted(BUN, 2, '  "patchedDependencies": { "lodash": "x" },'), 2, "refused"),
    ("not JSON", replaced(BUN, 12, '    "lodash": ["lodash@4.17.21" "" {}],'), 12, "not bun.lock"),
]

# --- Java (maven.lock) --------------------------------------------------------------
SHA256 = "sha256:" + "ab" * 32
MAVEN = f"""\
# gristmill Java lockfile: group:artifact:version sha256:<hex> of its jar
com.google.code.gson:gson:2.10.1 {SHA256}
org.slf4j:slf4j-api:2.0.9 {SHA256}
"""
MAVEN_CASES: list[Case] = [
    ("url", replaced(MAVEN, 2, f"https://repo.evil/gson-2.10.1.jar {SHA256}"), 2, "group:"),
    ("repo in it", replaced(MAVEN, 2, f"g:a:1@https://repo.evil/ {SHA256}"), 2, "group:"),
    ("repo option", replaced(MAVEN, 2, f"g:a:1 {SHA256} --repo=http://evil"), 2, "group:"),
    ("property", inserted(MAVEN, 3, "-Dmaven.repo.remote=http://evil"), 3, "group:"),
    ("classifier", replaced(MAVEN, 3, f"org.slf4j:slf4j-api:jar:sources:2.0.9 {SHA256}"), 3, "gr"),
    ("type", replaced(MAVEN, 3, f"org.slf4j:slf4j-api:pom:2.0.9 {SHA256}"), 3, "group:"),
    ("path", replaced(MAVEN, 2, f"../../etc/x.jar {SHA256}"), 2, "group:"),
    ("file url", replaced(MAVEN, 2, f"file:///tmp/x.jar {SHA256}"), 2, "group:"),
    ("range", replaced(MAVEN, 3, f"org.slf4j:slf4j-api:[2.0,3.0) {SHA256}"), 3, "group:"),
    ("latest", replaced(MAVEN, 3, f"org.slf4j:slf4j-api:LATEST {SHA256}"), 3, "floats"),
    ("release", replaced(MAVEN, 3, f"org.slf4j:slf4j-api:RELEASE {SHA256}"), 3, "floats"),
    ("snapshot", replaced(MAVEN, 3, f"org.slf4j:slf4j-api:2.1-SNAPSHOT {SHA256}"), 3, "floats"),
    ("twice", replaced(MAVEN, 3, f"com.google.code.gson:gson:2.9.0 {SHA256}"), 3, "second time"),
    ("no hash", replaced(MAVEN, 2, "com.google.code.gson:gson:2.10.1"), 2, "group:"),
]

# --- C# (gristmill-nuget-lock.json, as nuget.py writes it) --------------------------
SHA512 = "A" * 86 + "=="
NUGET_PACKAGE = {"id": "Newtonsoft.Json", "version": "13.0.3", "sha512": SHA512}
NUGET = json.dumps(
    {"version": 1, "feed": "https://api.nuget.org/v3/index.json", "packages": [NUGET_PACKAGE]},
    indent=2,
)


def nuget(feed: object = "https://api.nuget.org/v3/index.json", **package: object) -> str:
    entries = [{**NUGET_PACKAGE, **package}]
    return json.dumps({"version": 1, "feed": feed, "packages": entries}, indent=2)


def nuget_twice() -> str:
    lock = json.loads(NUGET)
    lock["packages"].append({**NUGET_PACKAGE, "id": "newtonsoft.json"})
    return json.dumps(lock, indent=2)


NUGET_CASES: list[Case] = [
    ("path id", nuget(id="../../evil"), 6, "not a package id"),
    ("url id", nuget(id="http://evil/x.nupkg"), 6, "not a package id"),
    ("range", nuget(version="[1.0,)"), 7, "exact package version"),
    ("floating", nuget(version="13.*"), 7, "exact package version"),
    ("no hash", nuget(sha512=""), 8, "SHA-512"),
    ("hex hash", nuget(sha512="ab" * 64), 8, "SHA-512"),
    ("url key", nuget(url="http://evil/x.nupkg"), 5, "id, version and sha512"),
    ("feed not a URL", nuget(feed={"url": "http://evil/"}), 3, "feed"),
    ("twice", nuget_twice(), 11, "second time"),
]

TABLES: list[tuple[str, list[Case]]] = [
    ("python", PYTHON_CASES),
    ("go", GO_CASES),
    ("typescript", BUN_CASES),
    ("java", MAVEN_CASES),
    ("csharp", NUGET_CASES),
]
GOOD = {"python": PYTHON, "go": GO, "typescript": BUN, "java": MAVEN, "csharp": NUGET}


@pytest.mark.parametrize("language", GOOD)
def test_what_each_resolver_writes_is_accepted(language: str) -> None:
    assert validated(language, GOOD[language]).content == GOOD[language]


def test_what_go_mod_tidy_wrote_is_accepted() -> None:
    assert validated("go", GO_TIDY).content == GO_TIDY


@pytest.mark.parametrize(
    ("language", "content", "number", "why"),
    [(lang, content, number, why) for lang, cases in TABLES for _, content, number, why in cases],
    ids=[f"{lang}-{name}" for lang, cases in TABLES for name, *_ in cases],
)
@pytest.mark.attack("lockfiles given back")
def test_a_hostile_lockfile_is_refused_naming_its_line(
    language: str, content: str, number: int, why: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validated(language, content)
    assert refused.value.field == "job.lockfile.content"
    detail = refused.value.detail
    assert why in detail
    if number:
        # The line's start, quoted (a continued line is quoted with its continuations).
        start = content.splitlines()[number - 1].removesuffix("\\").strip()[:15]
        assert detail.startswith(f"line {number}: {start!r}"[:-1]), detail
    assert len(detail) < 400, detail


@pytest.mark.parametrize(
    ("language", "make"),
    [
        ("python", lambda long: inserted(PYTHON, 4, f"--index-url {long}")),
        ("go", lambda long: inserted(GO, 7, f"replace github.com/google/uuid => {long}")),
        ("typescript", lambda long: bun_package([f"lodash@{long}", {}])),
        ("java", lambda long: replaced(MAVEN, 2, f"{long} {SHA256}")),
        ("csharp", lambda long: nuget(id=long)),
    ],
)
@pytest.mark.attack("lockfiles given back")
def test_a_refusal_quotes_a_long_line_only_in_part(
    language: str, make: Callable[[str], str]
) -> None:
    long = "http://127.0.0.1:1/" + "x" * 20_000
    with pytest.raises(InvalidRequest) as refused:
        validated(language, make(long))
    assert len(refused.value.detail) < 400


@pytest.mark.attack("lockfiles given back")
def test_a_nuget_lockfile_of_another_feed_is_refused_at_install_naming_the_line() -> None:
    # The feed is the service's setting: the request's validation does not know it, the
    # install step does, and refuses before any step runs.
    context = ToolContext("mono", index_urls=("http://127.0.0.1:1/v3/index.json",))
    found = _REGISTRY.get("csharp").plugin.resolver()
    assert found is not None
    with pytest.raises(DependencyFailure, match=r"line 3: '\"feed\": \"https://api.nuget"):
        found.install(Lockfile("csharp", found.lock_format, NUGET), context)


# --- End to end: the real server, a hostile lockfile per language ------------------
RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
EXAMPLES = {"python": "py", "go": "go", "typescript": "ts", "java": "java", "csharp": "cs"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Client, Path]]:
    """A client of a server over the real sandbox, and the server's work directory."""
    with sandbox_work_dir() as work_dir:
        overrides = {"address": "127.0.0.1:0", "work_dir": work_dir}
        with BackgroundServer(load_config(overrides=overrides)) as address, Client(address) as c:
            yield c, work_dir


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A loopback port hostile lockfiles point at, and its http:// address: what connects
    to it is something the lockfile made a tool fetch."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server, f"http://127.0.0.1:{server.getsockname()[1]}"


def nothing_connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def built(work_dir: Path) -> list[Path]:
    """Every file of an environment the server installed or began to (`envs`, `tmp`), and
    every download a resolver kept."""
    deps = work_dir / "deps"
    places = [deps / "environments" / "envs", deps / "environments" / "tmp", deps / "tool-cache"]
    return [path for place in places for path in place.rglob("*") if not path.is_dir()]


HOSTILE: dict[str, Callable[[str], tuple[str, int]]] = {
    "python": lambda url: (inserted(PYTHON, 1, f"--index-url {url}/simple"), 1),
    "go": lambda url: (inserted(GO, 7, "replace github.com/google/uuid => ../evil"), 7),
    "typescript": lambda url: (bun_package([f"lodash@{url}/lodash.tgz", {}]), 12),
    # Maven would ask the repository for the newest gson: refused now, installed before.
    "java": lambda url: (replaced(MAVEN, 2, f"com.google.code.gson:gson:LATEST {SHA256}"), 2),
    "csharp": lambda url: (nuget(id=f"{url}/x.nupkg"), 6),
}


def example(language: str) -> tuple[str, dict[str, object]]:
    code = (RUNTIMES / language / f"example.{EXAMPLES[language]}").read_text()
    args = json.loads((RUNTIMES / language / "example.args.json").read_text())
    return code, args


@pytest.mark.attack("lockfiles given back")
@pytest.mark.parametrize("language", HOSTILE)
def test_a_job_with_a_hostile_lockfile_is_invalid_argument_and_nothing_is_fetched(
    served: tuple[Client, Path], listener: tuple[socket.socket, str], language: str
) -> None:
    client, work_dir = served
    server, url = listener
    content, number = HOSTILE[language](url)
    code, args = example(language)
    with pytest.raises(grpc.RpcError) as refused:
        client.execute(
            language, code, args, lockfile=pb.Lockfile(content=content), timeout_s=TIMEOUT_S
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"job.lockfile.content: line {number}: " in (refused.value.details() or "")
    assert nothing_connected(server)
    assert built(work_dir) == []


@pytest.mark.attack("lockfiles given back")
def test_a_csharp_job_whose_lockfile_names_another_feed_is_a_dependency_error(
    served: tuple[Client, Path], listener: tuple[socket.socket, str]
) -> None:
    client, work_dir = served
    server, url = listener
    code, args = example("csharp")
    lockfile = pb.Lockfile(content=nuget(feed=f"{url}/v3/index.json"))
    outcome = client.execute("csharp", code, args, lockfile=lockfile, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "line 3: " in outcome.error.message and "another feed" in outcome.error.message
    assert outcome.usage.phases.install_ms == 0
    assert nothing_connected(server)
    assert built(work_dir) == []
