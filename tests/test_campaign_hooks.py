"""The controller's hooks around the trials: host holds (lab reservations) and the Ansible provisioning step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner.cli import main
from runner.hosts.local import LocalHost
from runner.lab.reservations import acquire
from runner.records.store import read_campaign

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hold(tmp_path: Path) -> Path:
    """This test's own hold file for localhost (never the machine's /var/lib/runner/holds)."""
    return tmp_path / "holds" / "localhost.json"


@pytest.fixture
def inventory(tmp_path: Path, hold: Path) -> Path:
    """The project's inventory, with localhost's hold file in tmp_path (its runner_hold_path)."""
    inv = Path(shutil.copytree(PROJECT / "inventory", tmp_path / "inventory"))
    (inv / "host_vars").mkdir(exist_ok=True)
    (inv / "host_vars" / "localhost.yml").write_text(f"runner_hold_path: {hold}\n")
    return inv


def matrix(tmp: Path, name: str, extra: str = "", hosts_extra: str = "") -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: local, inventory: {tmp / 'inventory'}{hosts_extra}}}\n"
        "workload: {name: command, params: {run: 'echo {\\\"v\\\": 1}'}}\n"
        "axes: {n: [1, 2]}\nrepetitions: 1\ntimeout: 30\n" + extra
    )
    return path


def test_busy_host_is_refused_with_its_holder(tmp_path: Path, inventory: Path, hold: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = str(hold)
    hold = acquire(LocalHost(), "alice@lab", "someone-elses-campaign", ttl=60, path=path)
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
    acquire(LocalHost(), "bob@lab", "next", ttl=60, path=path).release()


def test_provision_step_runs_ansible_before_the_trials(tmp_path: Path, inventory: Path) -> None:
    path = matrix(tmp_path, "provisioned", extra="provision: true\n")
    assert main(["launch", str(path), "--datasets", str(tmp_path / "ds")]) == 0
    root = tmp_path / "ds" / "provisioned"
    facts = json.loads((root / "provision" / "hosts" / "localhost.json").read_text())
    assert facts["cpu"]["model"] and facts["kernel"]["release"] and facts["cpu"]["threads"] >= 1
    assert (root / "provision" / "ansible").is_dir()  # ansible-runner's private data dirs, kept with the dataset
    _, trials, prov = read_campaign(root)
    assert set(trials["status"]) == {"ok"}
    assert prov["hosts"]["localhost"]["cpus"] >= 1
