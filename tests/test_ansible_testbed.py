"""The facts playbook over real SSH (host keys checked) against the namespace test bed."""

from __future__ import annotations

import pytest

from runner.provision.ansible import run_playbook
from runner.provision.fingerprint import load_facts
from tests.test_ansible_playbooks import THP, check_mode_knobs

pytestmark = [pytest.mark.integration, pytest.mark.netns]


def test_facts_playbook_over_ssh(testbed, tmp_path):
    result = run_playbook("facts.yml", inventory=testbed.inventory_path, limit="testbed",
                          extravars={"host_facts_dest": str(tmp_path / "hosts")}, private_data_root=tmp_path / "runs")
    names = sorted(h.name for h in testbed.hosts)
    assert sorted(result.stats) == names
    for name in names:
        assert load_facts(tmp_path / "hosts" / f"{name}.json")["cpu"]["threads"] >= 1


def test_tuning_check_mode_over_ssh_changes_nothing(testbed, tmp_path):
    # The test-bed hosts share this machine's /sys: the tuning role must only report what it would change.
    before = THP.read_text()
    knobs = check_mode_knobs(tmp_path / "state")
    result = run_playbook("tune.yml", inventory=testbed.inventory_path, limit="tb1", extravars=knobs, check=True,
                          private_data_root=tmp_path / "runs")
    assert THP.read_text() == before
    assert not (tmp_path / "state").exists()
    report = result.data["host_tuning"]["tb1"]
    assert report["changes"] >= 1 and result.stats["tb1"].changed >= 1  # THP would change
    assert report["blocked"] == [] and report["reboot_required"] is False
