"""One campaign across hosts that run different environments (a KVM host beside a Xen dom0): each trial goes
only to a host that runs its environment, a host that runs none of them is left out in one line, and an
environment no host can run is one line (exit 2) before any trial. Real hosts: the namespace test bed's sshds;
what they run is narrowed by the inventory's runner_envs (they share this machine's tools) and found by the
same probes as on a lab host (`command -v xl` fails on all of them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner.cli import main
from runner.errors import UsageError
from runner.records.store import read_campaign
from runner.testing.testbed import TestBed
from tests.test_remote_campaign import bed_matrix, run_campaign


def _declare(bed: TestBed, envs: dict[str, list[str]]) -> None:
    """Give the test bed's hosts runner_envs in its inventory."""
    doc = yaml.safe_load(bed.inventory_path.read_text())
    for name, hostvars in doc["all"]["children"]["testbed"]["hosts"].items():
        if name in envs:
            hostvars["runner_envs"] = envs[name]
    bed.inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.integration
@pytest.mark.netns
def test_each_trial_goes_to_a_host_that_runs_its_environment(make_testbed, tmp_path: Path, campaigns: list[str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bed = make_testbed(3)
    tb1, tb2, tb3 = (h.name for h in bed.hosts)
    # tb1 a "KVM host" (host, kvm), tb2 a "Xen host" (qemu stands for its own guests), tb3 neither of the matrix's
    _declare(bed, {tb1: ["host", "kvm"], tb2: ["qemu"], tb3: ["xen-pv"]})
    matrix = bed_matrix(tmp_path, bed, axes="  env: [host]\n  x: [1, 2, 3, 4]\n")
    messages: list[str] = []
    summary = run_campaign(matrix, tmp_path / "ds", campaigns, on_progress=lambda p: messages.extend(p.messages[len(messages):]))
    assert summary.success and summary.ok == 4
    _, trials, _ = read_campaign(summary.dataset)
    assert set(trials["host"]) == {tb1}  # the only host that runs env host
    left = [m for m in messages if "left out" in m]
    assert left == [f"host {tb2} left out: it runs none of the campaign's environments (host: not in its runner_envs (qemu))",
                    f"host {tb3} left out: it runs none of the campaign's environments (host: not in its runner_envs (xen-pv))"]
    assert f"environments per host: {tb1}: host" not in messages  # one host left: nothing to tell apart

    # `runner plan` shows the same from the inventory, without contacting a host
    assert main(["plan", str(matrix.path), "--show", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"host: {tb1} (4 trials)" in out and f"host {tb2} left out" in out


@pytest.mark.integration
@pytest.mark.netns
def test_two_environments_on_the_hosts_that_run_them(make_testbed, tmp_path: Path, campaigns: list[str]) -> None:
    """tb1 runs only the bare host; this machine (a local host of the group: the namespace hosts have no cgroup
    mount for containers) runs containers, found by the probe (podman and runc), and the bare host too."""
    bed = make_testbed(1)
    tb1 = bed.hosts[0].name
    _declare(bed, {tb1: ["host"]})
    doc = yaml.safe_load(bed.inventory_path.read_text())
    doc["all"]["children"]["testbed"]["hosts"]["here"] = {"ansible_connection": "local", "runner_envs": ["container", "host"]}
    bed.inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    matrix = bed_matrix(tmp_path, bed, workload="workload: {name: lockbench, params: {duration: 0.1, threads: 1}}\n",
                        axes="  env: [container, host]\n  lock: [ttas, ticket]\n", timeout=120)
    messages: list[str] = []
    summary = run_campaign(matrix, tmp_path / "ds", campaigns, on_progress=lambda p: messages.extend(p.messages[len(messages):]))
    assert summary.success and summary.ok == 4, summary.failures
    _, trials, _ = read_campaign(summary.dataset)
    assert set(trials[trials["env"] == "container"]["host"]) == {"here"}
    assert f"environments per host: here: container, host; {tb1}: host" in messages or \
        f"environments per host: {tb1}: host; here: container, host" in messages, messages


@pytest.mark.integration
@pytest.mark.netns
def test_an_environment_no_host_runs_is_one_line_before_any_trial(testbed: TestBed, tmp_path: Path, campaigns: list[str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    matrix = bed_matrix(tmp_path, testbed, axes="  env: [host, xen-pv]\n")
    with pytest.raises(UsageError) as err:
        run_campaign(matrix, tmp_path / "ds", campaigns)
    msg = str(err.value)
    assert msg.startswith("env xen-pv: no host of 'testbed' can run it: tb1: needs xl (a Xen dom0 with xen-utils); not found there; tb2: ")
    assert "\n" not in msg and not (tmp_path / "ds" / matrix.campaign / "trials").exists()
    assert main(["launch", str(matrix.path), "--datasets", str(tmp_path / "ds2")]) == 2
    assert "env xen-pv: no host of 'testbed' can run it" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.netns
def test_group_runs_a_matrix_written_for_this_machine_on_an_inventory_group(testbed: TestBed, tmp_path: Path, campaigns: list[str],
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`--inventory BED --group GROUP` runs a matrix whose `hosts:` is `local` (examples/study.yml) on that group:
    no edited copy of the matrix. A group the inventory lacks is one line naming the known ones."""
    name = f"grp{tmp_path.name[-6:]}".replace("_", "")
    campaigns.append(name)
    matrix = tmp_path / "m.yml"
    matrix.write_text(f"campaign: {name}\nhosts: local\nworkload: {{name: command, params: {{run: 'echo {{\\\"v\\\": 1}}'}}}}\n"
                      "axes: {x: [1, 2]}\nrepetitions: 1\ntimeout: 30\n")
    inv = str(testbed.inventory_path)
    assert main(["plan", str(matrix), "--inventory", inv, "--group", "testbed", "--show", "0"]) == 0
    assert "on hosts 'testbed'" in " ".join(capsys.readouterr().out.split())
    assert main(["launch", str(matrix), "--inventory", inv, "--group", "testbed", "--datasets", str(tmp_path / "ds")]) == 0
    _, trials, _ = read_campaign(name, tmp_path / "ds")
    assert set(trials["status"]) == {"ok"} and set(trials["host"]) <= {h.name for h in testbed.hosts}
    capsys.readouterr()
    assert main(["launch", str(matrix), "--inventory", inv, "--group", "testbd", "--datasets", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no host or group 'testbd'" in err[0] and "testbed" in err[0]
