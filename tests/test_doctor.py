"""`gristmill doctor` names the backend it would use, why, and the cgroup v1/v2 state."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill import doctor
from gristmill.config import load_config
from gristmill.doctor import Status, run_checks


def test_doctor_says_which_backend_and_why_and_explains_cgroups(tmp_path: Path) -> None:
    work_dir = tmp_path / "work"
    checks = {c.name: c for c in run_checks(load_config(overrides={"work_dir": work_dir}))}
    backend = checks["sandbox backend"]
    assert backend.status is Status.OK
    assert backend.detail.startswith(("nsjail (auto: nsjail at", "process (auto: nsjail unusable"))
    assert "v2" in checks["cgroups"].detail or checks["cgroups"].status is Status.WARN


def test_doctor_fails_clearly_when_a_forced_backend_is_unknown(tmp_path: Path) -> None:
    config = load_config(overrides={"work_dir": tmp_path, "sandbox_backend": "nsjail"})
    checks = {c.name: c for c in run_checks(config)}
    assert checks["sandbox backend"].status in (Status.OK, Status.FAIL)
    if checks["sandbox backend"].status is Status.FAIL:
        assert "nsjail backend cannot run here" in checks["sandbox backend"].detail


def test_doctor_warns_when_the_flows_cap_has_no_connection_tracking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(overrides={"work_dir": tmp_path / "work"})
    assert "network flows cap" not in {c.name for c in run_checks(config)}
    monkeypatch.setattr(doctor, "CONNTRACK", tmp_path / "absent")
    check = {c.name: c for c in run_checks(config)}["network flows cap"]
    assert check.status is Status.WARN and "nf_conntrack" in check.detail
