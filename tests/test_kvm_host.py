"""Real KVM one level down: a KVM host VM of the test bed (runner.testing.vmhost: QEMU TCG with an emulated AMD
CPU with SVM and nested paging), reached over SSH on a loopback port like a lab host, runs kvm guests with
`accel=kvm` for real. Slow: the host VM boots under TCG and its guests are nested.

Marked `long` (not in CI): the emulated host is not reliable yet. In one of five runs here its kernel
panicked in KVM_RUN ("corrupted stack end detected inside scheduler", after RCU stalls) while another
TCG-heavy job shared the 2 cores; in another the trials completed with accel=kvm, hypervisor KVM and
kvm-clock. Run it with `pytest -m long tests/test_kvm_host.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli import main
from runner.execution import guests
from runner.records.store import read_campaign
from runner.testing import vmhost

pytestmark = [pytest.mark.integration, pytest.mark.guest, pytest.mark.long]


@pytest.fixture(scope="module")
def kvm_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[vmhost.VMHost, Path]]:
    where = tmp_path_factory.mktemp("kvmhost")
    vm = vmhost.start_kvm_host(where, guests.CONTROLLER_CACHE, cpus=1)  # one CPU: no cross-CPU IPIs to emulate
    try:
        yield vm, vmhost.write_inventory([vm], where)
    finally:
        vmhost.stop(vm)


@pytest.mark.timeout(1800)
def test_kvm_guests_on_a_kvm_host_vm(kvm_host: tuple[vmhost.VMHost, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    vm, inventory = kvm_host
    monkeypatch.setenv("RUNNER_PROBE_TIMEOUT", "240")  # the probe guest is nested: tens of seconds to init
    name = "pytest-kvm-host"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: vmhosts, inventory: {inventory}}}\n"
        "workload: {name: lockbench, params: {env: kvm, vcpus: 1, lock: ticket, threads: 1, duration: 1.0}}\n"
        "axes: {vms: [1, 2]}\nrepetitions: 1\ntimeout: 300\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert (trials["status"] == "ok").all() and set(trials["accel"]) == {"kvm"}, trials[["accel", "error"]]
    facts = [f for doc in trials["guest_facts_json"] for f in json.loads(doc)]
    assert all(f["hypervisor"] == "KVM" for f in facts), facts
    assert all(f["clocksource"] == "kvm-clock" and "kvm_clock" in f["pv_features"] for f in facts), facts
    steal = metrics[(metrics["metric"] == "guest_steal_pct") & metrics["vm"].isna()].set_index("vms")["value"]
    assert steal[2] > steal[1] and steal[2] > 0, steal  # two guests on the same host CPU take turns
    delay = metrics[(metrics["metric"] == "vcpu_run_delay_s") & metrics["vm"].isna()].set_index("vms")["value"]
    assert delay[2] > delay[1], delay  # and the host saw their vCPU threads wait
