"""The controller's hooks around the trials: host holds (lab reservations) and the Ansible provisioning step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main
from runner.hosts.local import LocalHost
from runner.lab.reservations import acquire
from runner.records.store import read_campaign

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]


def matrix(tmp: Path, name: str, extra: str = "", hosts_extra: str = "") -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}{hosts_extra}}}\n"
        "workload: {name: command, params: {run: 'echo {\\\"v\\\": 1}'}}\n"
        "axes: {n: [1, 2]}\nrepetitions: 1\ntimeout: 30\n" + extra
    )
    return path


def test_busy_host_is_refused_with_its_holder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hold = acquire(LocalHost(), "alice@lab", "someone-elses-campaign", ttl=60)
    try:
        rc = main(["launch", str(matrix(tmp_path, "skipper", hosts_extra=", busy: skip")), "--datasets", str(tmp_path / "ds")])
        err = capsys.readouterr().err
        assert rc == 1
        assert "someone-elses-campaign" in err and "alice@lab" in err and len(err.strip().splitlines()) == 1
        rc = main(["launch", str(matrix(tmp_path, "waiter", hosts_extra=", busy: wait, busy_timeout: 2")), "--datasets", str(tmp_path / "ds")])
        captured = capsys.readouterr()
        assert rc == 1
        assert "someone-elses-campaign" in captured.err
    finally:
        hold.release()
    # Once released, the same campaign runs, and its own hold is gone afterwards.
    assert main(["launch", str(matrix(tmp_path, "waiter", hosts_extra=", busy: wait, busy_timeout: 2")), "--datasets", str(tmp_path / "ds")]) == 0
    acquire(LocalHost(), "bob@lab", "next", ttl=60).release()


def test_provision_step_runs_ansible_before_the_trials(tmp_path: Path) -> None:
    path = matrix(tmp_path, "provisioned", extra="provision: true\n")
    assert main(["launch", str(path), "--datasets", str(tmp_path / "ds")]) == 0
    root = tmp_path / "ds" / "provisioned"
    facts = json.loads((root / "provision" / "hosts" / "localhost.json").read_text())
    assert facts["cpu"]["model"] and facts["kernel"]["release"] and facts["cpu"]["threads"] >= 1
    assert (root / "provision" / "ansible").is_dir()  # ansible-runner's private data dirs, kept with the dataset
    _, trials, prov = read_campaign(root)
    assert set(trials["status"]) == {"ok"}
    assert prov["hosts"]["localhost"]["cpus"] >= 1
