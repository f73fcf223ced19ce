"""deploy/: the Kubernetes manifests decode strictly into the Kubernetes API's own types
(deploy/kubernetes/check, k8s.io/api from the Go module proxy; no cluster runs here), say
what the server needs, and the systemd unit passes `systemd-analyze verify`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gristmill.config import ServerConfig, load_config
from gristmill.server.access import check_exposure

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CHECK = DEPLOY / "kubernetes" / "check"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def _check(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["go", "run", ".", *map(str, argv)],
        cwd=CHECK,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """Every manifest's objects, strictly checked, as `<kind>/<name>`."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed")
    done = _check("-json", *MANIFESTS)
    assert done.returncode == 0, done.stderr
    found = [json.loads(line) for line in done.stdout.splitlines()]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in found}


def test_every_manifest_is_valid_for_the_kubernetes_api(objects):
    assert set(objects) == {
        "ConfigMap/gristmill",
        "Service/gristmill",
        "Deployment/gristmill",
        "Deployment/gristmill-worker",
    }


def test_the_checker_refuses_a_misspelt_field_and_a_wrong_type(objects, tmp_path: Path):
    text = (DEPLOY / "kubernetes" / "deployment.yaml").read_text()
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(text.replace("terminationGracePeriodSeconds:", "terminationGracePeriod:"))
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text(text.replace("replicas: 3", "replicas: three"))
    for path in (misspelt, wrong_type):
        done = _check(path)
        assert done.returncode == 1 and "invalid:" in done.stderr


def _server(objects) -> dict[str, Any]:
    spec: dict[str, Any] = objects["Deployment/gristmill"]["spec"]["template"]["spec"]
    return spec


def test_probes_use_grpc_health_on_the_port_the_headless_service_selects(objects):
    service = objects["Service/gristmill"]["spec"]
    assert service["clusterIP"] == "None"
    pod = objects["Deployment/gristmill"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod.items()
    container = _server(objects)["containers"][0]
    assert container["ports"][0]["containerPort"] == 50051
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == 50051


def test_grace_period_covers_prestop_and_the_servers_drain(objects, tmp_path: Path):
    pod = _server(objects)
    path = tmp_path / "gristmill.toml"
    path.write_text(objects["ConfigMap/gristmill"]["data"]["gristmill.toml"])
    drain_s = load_config(path, environ={}).drain_grace_s
    pre_stop_s = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + drain_s


def test_server_gets_only_the_network_jobs_capabilities_and_the_worker_none(objects):
    server = _server(objects)["containers"][0]["securityContext"]
    assert sorted(server["capabilities"]["add"]) == ["NET_ADMIN", "SYS_ADMIN"]
    assert server["allowPrivilegeEscalation"] is False and "privileged" not in server
    worker = objects["Deployment/gristmill-worker"]["spec"]["template"]["spec"]
    assert worker["securityContext"]["runAsNonRoot"] is True
    assert worker["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "gristmill:50051" in worker["containers"][0]["args"]


def test_configmap_settings_load_as_a_server_configuration(objects, tmp_path: Path):
    path = tmp_path / "gristmill.toml"
    path.write_text(objects["ConfigMap/gristmill"]["data"]["gristmill.toml"])
    config = load_config(path, environ={})
    assert config.address == "0.0.0.0:50051" and config.sandbox_backend == "process"
    check_exposure(config, tokens=0)  # the server would start with these settings
    limits = _server(objects)["containers"][0]["resources"]["limits"]
    assert config.max_limits.memory_bytes < int(limits["memory"].removesuffix("Gi")) * 2**30


def test_systemd_waits_for_the_default_drain():
    unit = (DEPLOY / "systemd" / "gristmill.service").read_text()
    timeout_s = int(unit.split("TimeoutStopSec=")[1].split()[0])
    assert timeout_s > ServerConfig().drain_grace_s


def test_systemd_unit_verifies(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "gristmill.service"
    # verify wants the program to exist: this checkout's, in place of /opt/gristmill's.
    text = (DEPLOY / "systemd" / "gristmill.service").read_text()
    unit.write_text(text.replace("/opt/gristmill/bin/", f"{Path(sys.executable).parent}/"))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "gristmill.service" not in done.stderr, done.stderr
