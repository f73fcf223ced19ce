"""Dependencies through the real server, sandbox, uv and package registry.

One server per module (its uv download cache warms once); a second server with a
fresh cache where a test needs one. Few jobs, small packages: these need the network.
"""

from __future__ import annotations

import concurrent.futures
import socket
import uuid
from collections.abc import Iterator

import grpc
import pytest

from gristmill.client import Client, outcome_result
from gristmill.config import load_config
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

REQUESTS_JOB = """\
# /// script
# dependencies = ["requests"]
# ///
import requests

def main():
    return requests.__version__
"""
YAML_JOB = """\
import yaml

def main(text: str):
    return yaml.safe_load(text)
"""
TIMEOUT_S = 300
# docopt 0.6.2 exists only as an sdist: installing it runs its setup.py.
DOCOPT_SDIST_SHA256 = "49b3a825280bd66b3aa83585ef59c4a8c82f2c8a522dbe754a8bc8d08c85c491"


def serve() -> Iterator[str]:
    """A server over the real sandbox with empty caches, for as long as the iteration."""
    with sandbox_work_dir() as work_dir:
        overrides = {"address": "127.0.0.1:0", "work_dir": work_dir, "max_concurrent_jobs": 8}
        with BackgroundServer(load_config(overrides=overrides)) as address:
            yield address


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    for address in serve():
        with Client(address) as client:
            yield client


def run(client: Client, code: str, **job) -> pb.Outcome:
    return client.execute("python", code, timeout_s=TIMEOUT_S, **job)


def test_declared_requests_job_runs_and_its_second_run_is_cached(client):
    first = run(client, REQUESTS_JOB)
    assert first.verdict == pb.SUCCESS, first
    assert outcome_result(first).startswith("2.")
    assert not first.environment.cached
    assert first.usage.phases.resolve_ms > 0
    assert first.usage.phases.install_ms > 0
    assert "requests==" in first.lockfile.content and "--hash=sha256:" in first.lockfile.content
    assert (first.lockfile.language, first.lockfile.format) == ("python", "requirements.txt")

    second = run(client, REQUESTS_JOB)
    assert second.verdict == pb.SUCCESS, second
    assert second.environment.cached
    assert second.environment.key == first.environment.key
    assert second.lockfile.sha256 == first.lockfile.sha256


def test_inferred_yaml_job_runs_and_its_second_run_is_cached(client):
    outcomes = [run(client, YAML_JOB, args={"text": "a: [1, 2]"}) for _ in range(2)]
    assert [o.verdict for o in outcomes] == [pb.SUCCESS, pb.SUCCESS], outcomes
    assert outcome_result(outcomes[0]) == {"a": [1, 2]}
    assert "pyyaml==" in outcomes[0].lockfile.content
    assert [o.environment.cached for o in outcomes] == [False, True]


def test_a_second_job_with_the_same_requirements_reuses_the_resolution(client):
    code = YAML_JOB + "\n# a different job, the same requirements\n"
    run(client, YAML_JOB, args={"text": "1"})
    events = list(client.execute_stream("python", code, {"text": "2"}, timeout_s=TIMEOUT_S))
    outcome = events[-1].outcome
    assert outcome.verdict == pb.SUCCESS, outcome
    resolve = [e.phase.detail for e in events if e.HasField("phase") and e.phase.name == "resolve"]
    assert any(detail.startswith("resolved within the last") for detail in resolve), resolve
    assert outcome.environment.cached


def test_a_job_given_its_lockfile_is_not_resolved_again(client):
    lockfile = run(client, YAML_JOB, args={"text": "1"}).lockfile
    replay = run(client, YAML_JOB, args={"text": "1"}, lockfile=lockfile)
    assert replay.verdict == pb.SUCCESS, replay
    assert replay.usage.phases.resolve_ms == 0
    assert replay.environment.cached
    assert replay.lockfile.sha256 == lockfile.sha256


def test_a_package_that_does_not_exist_is_a_dependency_error_in_uvs_words(client):
    code = "import gristmill_no_such_package_xyz\n\ndef main():\n    return 1\n"
    outcome = run(client, code)
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert outcome.error.name == "DependencyError"
    assert "gristmill-no-such-package-xyz" in outcome.error.message
    assert "not found in the package registry" in outcome.error.message
    assert "Traceback" not in outcome.error.message


def test_a_script_for_another_python_is_a_dependency_error(client):
    code = '# /// script\n# requires-python = ">=3.99"\n# dependencies = []\n# ///\n'
    outcome = run(client, code)
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "requires Python >=3.99" in outcome.error.message


def test_a_job_cannot_write_into_its_environment(client):
    code = """\
import pathlib, yaml

def main():
    target = pathlib.Path(yaml.__file__).parent / "planted.py"
    try:
        target.write_text("x = 1")
    except OSError as error:
        return error.strerror
    return "written"
"""
    outcome = run(client, code)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == "Read-only file system"


def test_many_jobs_needing_one_new_environment_build_it_once(client):
    resolution = client.resolve("python", "import idna\n", timeout_s=TIMEOUT_S)
    assert not resolution.HasField("error"), resolution
    code = "import idna\n\ndef main():\n    return idna.encode('xn--bcher-kva.example').decode()\n"

    def installs(job_id: str) -> tuple[int, pb.Outcome]:
        events = list(
            client.execute_stream(
                "python", code, job_id=job_id, lockfile=resolution.lockfile, timeout_s=TIMEOUT_S
            )
        )
        count = sum(e.HasField("phase") and e.phase.name == "install" for e in events)
        return count, events[-1].outcome

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(installs, [str(uuid.uuid4()) for _ in range(6)]))
    assert all(o.verdict == pb.SUCCESS for _, o in results), results
    assert sorted(o.environment.cached for _, o in results) == [False] + [True] * 5
    # Only the builder's stream shows the install phase (a phase event and uv's lines).
    assert sorted(bool(count) for count, _ in results) == [False] * 5 + [True]


def test_the_stream_shows_resolve_and_install_before_the_run(client):
    code = "import six\n\ndef main():\n    return six.PY3\n"
    events = list(client.execute_stream("python", code, timeout_s=TIMEOUT_S))
    phases = [e.phase.name for e in events if e.HasField("phase")]
    order = list(dict.fromkeys(phases))
    assert order == ["resolve", "install", "prepare", "sandbox_setup", "run"]
    details = [e.phase.detail for e in events if e.HasField("phase") and e.phase.name == "resolve"]
    assert details[0] == "six (import six, line 1)"
    assert any(d.startswith("Resolved ") for d in details)
    assert events[-1].outcome.verdict == pb.SUCCESS


def test_resolve_answers_dependencies_and_a_lockfile(client):
    response = client.resolve("python", YAML_JOB + "import requests  # gristmill: requests<3\n")
    assert not response.HasField("error")
    assert [(d.name, d.requirement, d.source) for d in response.dependencies] == [
        ("pyyaml", "pyyaml", pb.INFERRED),
        ("requests", "requests<3", pb.INFERRED),
    ]
    assert response.dependencies[0].where == "import yaml, line 1"
    assert "pyyaml==" in response.lockfile.content
    assert len(response.lockfile.sha256) == 64


def test_resolve_of_nothing_and_of_the_impossible(client):
    none = client.resolve("python", "import os\n")
    assert list(none.dependencies) == [] and not none.HasField("lockfile")
    failed = client.resolve("python", "import gristmill_no_such_package_xyz\n")
    assert failed.error.name == "DependencyError"
    assert "not found in the package registry" in failed.error.message
    assert client.resolve("bash", "curl example.com").dependencies == []


@pytest.mark.parametrize(
    ("language", "lockfile", "field"),
    [
        ("python", pb.Lockfile(content="x==1", sha256="0" * 64), "job.lockfile.sha256"),
        ("python", pb.Lockfile(content="x==1", language="bash"), "job.lockfile.language"),
        ("python", pb.Lockfile(content="x==1", format="poetry.lock"), "job.lockfile.format"),
        ("python", pb.Lockfile(), "job.lockfile.content"),
        ("bash", pb.Lockfile(content="x==1"), "job.lockfile"),
    ],
)
def test_a_lockfile_that_does_not_fit_is_invalid_argument(client, language, lockfile, field):
    with pytest.raises(grpc.RpcError) as refused:
        client.execute(language, "def main(): pass\n", lockfile=lockfile, timeout_s=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(f"{field}:")


def test_a_package_without_a_wheel_is_a_dependency_error_and_its_build_code_never_runs(client):
    # Its setup.py would run in the resolve sandbox with uv's cache, shared by every
    # tenant, writable: source builds are off unless the service allows them.
    code = '# /// script\n# dependencies = ["docopt==0.6.2"]\n# ///\ndef main():\n    pass\n'
    outcome = run(client, code)
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "docopt==0.6.2 has no usable wheels" in outcome.error.message


def test_a_lockfile_pinning_an_sdist_is_a_dependency_error_and_its_build_code_never_runs(client):
    content = f"docopt==0.6.2 --hash=sha256:{DOCOPT_SDIST_SHA256}\n"
    outcome = run(client, "def main():\n    pass\n", lockfile=pb.Lockfile(content=content))
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "docopt" in outcome.error.message
    assert "building from source is disabled" in outcome.error.message


@pytest.fixture
def loopback() -> Iterator[socket.socket]:
    """A TCP listener on the host's loopback that no one should ever connect to."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield listener


def nobody_connected(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_a_requirement_naming_a_loopback_url_is_refused_before_anything_runs(client, loopback):
    # The resolve sandbox shares the host's network: a URL of the job's choosing could
    # reach the service's own port. It is refused before the sandbox starts.
    url = f"http://127.0.0.1:{loopback.getsockname()[1]}/evil-1.0.tar.gz"
    code = f'# /// script\n# dependencies = ["evil @ {url}"]\n# ///\ndef main():\n    pass\n'
    events = list(client.execute_stream("python", code, timeout_s=TIMEOUT_S))
    outcome = events[-1].outcome
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "names a URL; requirements may only name packages of the" in outcome.error.message
    assert not any(e.HasField("phase") for e in events)
    assert nobody_connected(loopback)


def test_a_lockfile_naming_a_loopback_url_is_invalid_argument_before_anything_runs(
    client, loopback
):
    url = f"http://127.0.0.1:{loopback.getsockname()[1]}/evil-1.0.tar.gz"
    content = f"evil @ {url} \\\n    --hash=sha256:{'0' * 64}\n"
    with pytest.raises(grpc.RpcError) as refused:
        run(client, "def main():\n    pass\n", lockfile=pb.Lockfile(content=content))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("job.lockfile.content: line 1: 'evil @ http://")
    assert nobody_connected(loopback)
