"""The facts playbook over real SSH (host keys checked) against the namespace test bed."""

from __future__ import annotations

import pytest

from runner.provision.ansible import run_playbook
from runner.provision.fingerprint import load_facts

pytestmark = [pytest.mark.integration, pytest.mark.netns]


def test_facts_playbook_over_ssh(testbed, tmp_path):
    result = run_playbook("facts.yml", inventory=testbed.inventory_path, limit="testbed",
                          extravars={"host_facts_dest": str(tmp_path / "hosts")}, private_data_root=tmp_path / "runs")
    names = sorted(h.name for h in testbed.hosts)
    assert sorted(result.stats) == names
    for name in names:
        assert load_facts(tmp_path / "hosts" / f"{name}.json")["cpu"]["threads"] >= 1
