"""A resolve step reaches the configured registries and nothing else (`deps.registries`).

Real server, sandbox, uv and registry: the same resolve succeeds with PyPI's hosts
listed and fails when the list names another host only, so the step's namespace is
filtered by that setting and not by the job's policy.
"""

from __future__ import annotations

from gristmill.client import Client
from gristmill.config import load_config
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

JOB = """\
# /// script
# dependencies = ["six"]
# ///
import six

def main():
    return six.__name__
"""


def _resolve(registries: str) -> pb.Outcome:
    with sandbox_work_dir() as work_dir:
        overrides = {"address": "127.0.0.1:0", "work_dir": work_dir, "deps.registries": registries}
        with (
            BackgroundServer(load_config(overrides=overrides)) as address,
            Client(address) as client,
        ):
            return client.execute("python", JOB, timeout_s=300)


def test_a_resolve_step_reaches_the_registries_it_is_given() -> None:
    outcome = _resolve("pypi.org:443,files.pythonhosted.org:443")
    assert outcome.verdict == pb.SUCCESS, outcome.detail
    assert outcome.result_json == '"six"'


def test_a_resolve_step_reaches_nothing_else() -> None:
    # An address, not another registry's name: here every registry is behind one proxy
    # address, and the policy filters addresses.
    outcome = _resolve("198.51.100.1:443")
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome.detail
