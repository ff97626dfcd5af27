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
from runner.execution import guests, images  # noqa: F401 - guests registers the guest runner
from runner.hosts.base import Host
from runner.provision import image, libvirt
from runner.provision.ansible import run_playbook
from runner.provision.environments import qemu
from runner.provision.fingerprint import load_facts
from runner.provision.guest import describe_guest
from runner.provision.inventory import connect, load_inventory
from runner.records.store import read_campaign
from runner.testing import vmhost

pytestmark = [pytest.mark.integration, pytest.mark.guest, pytest.mark.long]


@pytest.fixture(scope="module")
def kvm_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[vmhost.VMHost, Path]]:
    where = tmp_path_factory.mktemp("kvmhost")
    vm = vmhost.start_kvm_host(where, images.CONTROLLER_CACHE, cpus=1)  # one CPU: no cross-CPU IPIs to emulate
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


def _host(inventory: Path) -> Host:
    [spec] = load_inventory(inventory).resolve("vmhosts")
    return connect(spec)


@pytest.mark.timeout(900)
def test_probe_finds_working_kvm_on_the_kvm_host(kvm_host: tuple[vmhost.VMHost, Path], tmp_path: Path) -> None:
    """The `hardware` probe test of tests/test_libvirt_guest.py, against a host whose KVM works: the probe guest
    reaches its init under `accel=kvm`, so the probe answers kvm (on this machine itself it answers tcg)."""
    vm, inventory = kvm_host
    key = image.campaign_keypair(tmp_path / "keys")
    img = image.build_image(tmp_path / "images", key_path=key)
    host = _host(inventory)
    try:
        host.run(["mkdir", "-p", "/var/tmp/pytest-probe"], timeout=60)
        host.put(img.kernel, "/var/tmp/pytest-probe/vmlinuz")
        host.put(img.initrd, "/var/tmp/pytest-probe/initrd")
        assert libvirt.probe_accel(host, "/var/tmp/pytest-probe/vmlinuz", "/var/tmp/pytest-probe/initrd", timeout=240) == "kvm"
        assert not [n for n in libvirt.list_domains(host) if n.startswith("rnr-probe-")]
        # the qemu environment's probe (plain QEMU, no libvirt) decides the same way
        assert qemu.probe_accel(host, "/var/tmp/pytest-probe/vmlinuz", "/var/tmp/pytest-probe/initrd", 240,
                                "/var/tmp/pytest-probe") == "kvm"
        assert not host.run(["pgrep", "-f", "[r]nr-qprobe-"], timeout=30).ok  # [r]: not this pgrep's own command line
    finally:
        host.close()


@pytest.mark.timeout(900)
def test_facts_and_guest_kvm_role_on_the_kvm_host(kvm_host: tuple[vmhost.VMHost, Path], tmp_path: Path) -> None:
    """The facts playbook records the host's KVM (kvm_amd loaded, /dev/kvm, libvirt's version), and
    playbooks/guests.yml's guest_kvm role runs for real against the host: create (directory, XML, virsh
    create), a second run that changes nothing, destroy, a second destroy that changes nothing."""
    vm, inventory = kvm_host
    facts = run_playbook("facts.yml", inventory=inventory, extravars={"host_facts_dest": str(tmp_path / "hosts")},
                         private_data_root=tmp_path / "runs", timeout=600)
    assert sorted(facts.stats) == [vm.name]
    doc = load_facts(tmp_path / "hosts" / f"{vm.name}.json")
    assert "kvm_amd" in doc["kvm"]["modules"] and doc["kvm"]["dev_kvm"] is True, doc["kvm"]
    assert doc["virt"]["libvirt"], doc["virt"]
    host = _host(inventory)
    # No initrd, no network: the kernel boots under KVM until it finds no root and waits; that is enough here.
    host.put(image.newest_kernel(), "/var/tmp/pytest-role-vmlinuz")
    catalog = {"default": {"kernel": "/var/tmp/pytest-role-vmlinuz", "cmdline": "console=ttyS0"}}
    spec = describe_guest("kvm", {"vcpus": 1, "memory": 128, "accel": "kvm", "guest_kernel": "default"},
                          images.host_topology(host), catalog, "pytest-kvm-role", 0)
    xml = tmp_path / "domain.xml"
    xml.write_text(libvirt.domain_xml(spec, network=None, console_log="/var/tmp/pytest-role-console.log"))
    domains = [{"name": spec.name, "config": str(xml)}]

    def play(state: str) -> int:
        extravars = {"guest_kvm_state": state, "guest_kvm_domains": domains, "guest_kvm_config_dir": "/etc/libvirt/runner-pytest"}
        res = run_playbook("guests.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "runs",
                           timeout=900)
        return res.stats[vm.name].changed

    try:
        assert play("present") == 3
        assert libvirt.list_campaign(host, "pytest-kvm-role") == [spec.name]
        assert play("present") == 0
        assert play("absent") == 2
        assert libvirt.list_campaign(host, "pytest-kvm-role") == []
        assert play("absent") == 0
    finally:
        libvirt.destroy(host, spec.name)
        host.close()
