"""TypeScript dependencies through the real server, sandbox, Bun and npm registry: the
cache on a second run, a lockfile replayed, lockfiles refused, install scripts never run.

One server for the module (Bun's download cache warms once); small packages only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from gristmill.client import Client, outcome_result
from gristmill.config import load_config
from gristmill.languages.lockfiles import LockfileRefused
from gristmill.languages.registry import Registry
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

TIMEOUT_S = 300
LODASH_JOB = """\
import _ from "lodash";

export function main(xs: number[]) {
  return _.sortBy(xs);
}
"""
INTEGRITY = "sha512-" + "A" * 86 + "=="


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with sandbox_work_dir() as work_dir:
        overrides = {"address": "127.0.0.1:0", "work_dir": work_dir}
        with BackgroundServer(load_config(overrides=overrides)) as address, Client(address) as c:
            yield c


def run(client: Client, code: str, **job) -> pb.Outcome:
    return client.execute("typescript", code, timeout_s=TIMEOUT_S, **job)


def test_an_npm_job_runs_and_its_second_run_comes_from_the_cache(client):
    first = run(client, LODASH_JOB, args={"xs": [3, 1, 2]})
    assert first.verdict == pb.SUCCESS, first
    assert outcome_result(first) == [1, 2, 3]
    assert not first.environment.cached
    assert (first.lockfile.language, first.lockfile.format) == ("typescript", "bun.lock")
    assert '"lodash": ["lodash@4.' in first.lockfile.content
    assert "sha512-" in first.lockfile.content

    second = run(client, LODASH_JOB, args={"xs": [2, 1]})
    assert second.verdict == pb.SUCCESS, second
    assert second.environment.cached
    assert second.environment.key == first.environment.key


def test_a_lockfile_given_back_is_installed_and_not_resolved_again(client):
    lockfile = run(client, LODASH_JOB, args={"xs": [1]}).lockfile
    replay = run(client, LODASH_JOB, args={"xs": [2, 1]}, lockfile=lockfile)
    assert replay.verdict == pb.SUCCESS, replay
    assert replay.usage.phases.resolve_ms == 0
    assert replay.lockfile.sha256 == lockfile.sha256


@pytest.mark.attack("install scripts and disk")
def test_a_package_whose_postinstall_fails_installs_because_it_never_runs(client):
    # pkg-with-failing-postinstall's postinstall is `node this-does-not-exist.js`: had
    # Bun run it, the install would fail. (It has no module to load: a type-only import
    # asks for the package without loading it.)
    code = """\
import { readFileSync } from "node:fs";
import type {} from "pkg-with-failing-postinstall@1.0.0";

export function main() {
  const manifest = "/gristmill/env/node_modules/pkg-with-failing-postinstall/package.json";
  return JSON.parse(readFileSync(manifest, "utf8")).scripts.postinstall;
}
"""
    outcome = run(client, code)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == "node this-does-not-exist.js"


def _lockfile(packages: Mapping[str, Any], **extra: object) -> str:
    document = {
        "lockfileVersion": 1,
        "workspaces": {"": {"name": "gristmill-job", "dependencies": {"lodash": "^4"}}},
        "packages": packages,
        **extra,
    }
    return json.dumps(document)


GOOD = {"lodash": ["lodash@4.17.21", "", {}, INTEGRITY]}
REFUSED = {
    "git": {"lodash": ["lodash@git+https://example.com/x.git#abc", "", {}, INTEGRITY]},
    "github": {"lodash": ["lodash@github:owner/repo#abc", {}, "owner-repo-abc"]},
    "file": {"lodash": ["lodash@file:../x", {}]},
    "link": {"lodash": ["lodash@link:x", {}]},
    "tarball URL": {"lodash": ["lodash@https://example.com/lodash.tgz", {}]},
    "workspace": {"lodash": ["lodash@workspace:packages/lodash"]},
    "another registry": {"lodash": ["lodash@4.17.21", "https://evil.example/", {}, INTEGRITY]},
    "no integrity": {"lodash": ["lodash@4.17.21", "", {}, ""]},
    "sha1 integrity": {"lodash": ["lodash@4.17.21", "", {}, "sha1-" + "A" * 27 + "="]},
    "alias": {"lodash": ["underscore@1.13.6", "", {}, INTEGRITY]},
    "script key": {"lodash": ["lodash@4.17.21", "", {"scripts": {"postinstall": "x"}}, INTEGRITY]},
}


def _check(content: str) -> None:
    """The language's own rules for its lockfiles, as request validation applies them."""
    resolver = Registry().get("typescript").plugin.resolver()
    assert resolver is not None
    resolver.check_lockfile(content)  # type: ignore[attr-defined]


@pytest.mark.parametrize("packages", REFUSED.values(), ids=REFUSED.keys())
def test_a_lockfile_naming_anything_but_registry_packages_with_integrity_is_refused(packages):
    _check(_lockfile(GOOD))
    with pytest.raises(LockfileRefused):
        _check(_lockfile(packages))


@pytest.mark.parametrize(
    "extra",
    [
        {"trustedDependencies": ["lodash"]},
        {"patchedDependencies": {"lodash@4.17.21": "patches/x.patch"}},
        {"overrides": {"lodash": "file:../x"}},
        {"catalog": {"lodash": "4"}},
    ],
)
def test_trusted_dependencies_patches_overrides_and_catalogs_are_refused(extra):
    with pytest.raises(LockfileRefused):
        _check(_lockfile(GOOD, **extra))


def test_a_refused_lockfile_is_an_invalid_argument_before_anything_runs(client):
    bad = pb.Lockfile(
        language="typescript",
        format="bun.lock",
        content=_lockfile({"lodash": ["lodash@file:../x", {}]}),
    )
    with pytest.raises(Exception, match=r"job\.lockfile\.content"):
        run(client, LODASH_JOB, args={"xs": [1]}, lockfile=bad)


def test_bun_writes_trailing_commas_and_the_check_reads_them():
    text = _lockfile(GOOD).replace('"^4"}', '"^4",}').replace("{}]", "{},]")
    assert ",}" in text
    _check(text)


def test_a_package_json_among_the_files_decides_the_version(client):
    code = 'import _ from "lodash";\n\nexport function main() {\n  return _.VERSION;\n}\n'
    manifest = '{"dependencies": {"lodash": "4.17.20"}}'
    outcome = run(client, code, files={"package.json": manifest})
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == "4.17.20"
    resolved = client.resolve("typescript", code, files={"package.json": manifest})
    assert [(d.name, d.requirement) for d in resolved.dependencies] == [
        ("lodash", "lodash@4.17.20")
    ]


def test_a_package_that_does_not_exist_is_a_dependency_error_in_buns_words(client):
    code = 'import x from "gristmill-no-such-package-xyz";\nexport function main() {}\n'
    outcome = run(client, code)
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "gristmill-no-such-package-xyz" in outcome.error.message
    assert "failed to resolve" in outcome.error.message
    assert "Saved lockfile" not in outcome.error.message


def test_describe_through_the_service_reads_the_types(client):
    code = '/** Adds. */\nexport function main(a: number, kind: "x" | "y" = "x", when?: Date) {}\n'
    schema = client.describe("typescript", code)
    assert schema["properties"]["a"] == {"type": "number"}
    assert schema["properties"]["kind"]["enum"] == ["x", "y"]
    assert schema["properties"]["when"]["format"] == "date-time"
    assert schema["required"] == ["a"] and schema["description"] == "Adds."
