"""Real Xen one level down: a Xen host VM of the test bed (runner.testing.vmhost: QEMU TCG with an emulated
AMD CPU with SVM and nested paging boots Xen 4.17 by multiboot, with a Debian dom0), reached over SSH on a
loopback port like a lab host. xl really runs: xen-pv, xen-pvh and xen-hvm guests are created from the runner's
configs, reached through dom0, run lockbench and are destroyed. Slow: everything is nested under TCG.

Marked `long` (not in CI's time budget); run with `pytest -m long tests/test_xen_host.py`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli import main
from runner.execution import guests, images  # noqa: F401 - guests registers the guest runner
from runner.hosts.base import Host
from runner.provision import xen
from runner.provision.ansible import run_playbook
from runner.provision.fingerprint import load_facts
from runner.provision.guest import campaign_slug
from runner.provision.inventory import connect, load_inventory
from runner.records.store import read_campaign
from runner.testing import vmhost
from tests.events import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.guest, pytest.mark.long]


@pytest.fixture(scope="module")
def xen_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[vmhost.VMHost, Path]]:
    where = tmp_path_factory.mktemp("xenhost")
    vm = vmhost.start_xen_host(where, images.CONTROLLER_CACHE)
    try:
        yield vm, vmhost.write_inventory([vm], where)
    finally:
        vmhost.stop(vm)


def _dom0(inventory: Path) -> Host:
    [spec] = load_inventory(inventory).resolve("vmhosts")
    return connect(spec)


def test_xen_host_boots_with_hvm_and_hap(xen_host: tuple[vmhost.VMHost, Path]) -> None:
    vm, inventory = xen_host
    dom0 = _dom0(inventory)
    try:
        info = dom0.run(["xl", "info"], timeout=120)
        assert info.ok, info.stderr
        caps = xen.parse_virt_caps(info.stdout)
        assert {"pv", "hvm", "hap"} <= caps, info.stdout
        assert all(xen.check_can_run(dom0, kind, f"xen-{kind}") is None for kind in ("pv", "pvh")), caps
    finally:
        dom0.close()


@pytest.mark.timeout(900)
def test_facts_record_xen_and_its_virt_caps(xen_host: tuple[vmhost.VMHost, Path], tmp_path: Path) -> None:
    """The facts playbook, over SSH against dom0, records the hypervisor (Xen and its version) and the
    virtualisation capabilities `xl info` reports."""
    vm, inventory = xen_host
    facts = run_playbook("facts.yml", inventory=inventory, extravars={"host_facts_dest": str(tmp_path / "hosts")},
                         private_data_root=tmp_path / "runs", timeout=900)
    assert sorted(facts.stats) == [vm.name]
    virt = load_facts(tmp_path / "hosts" / f"{vm.name}.json")["virt"]
    assert virt["xen"] and virt["xen"].startswith("4.17"), virt
    assert {"pv", "hvm", "hap"} <= set(virt["xen_virt_caps"]), virt


@pytest.mark.timeout(2400)
def test_xen_pv_and_pvh_campaign(xen_host: tuple[vmhost.VMHost, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    vm, inventory = xen_host
    name = "pytest-xen-host"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: vmhosts, inventory: {inventory}}}\n"
        "workload: {name: lockbench, params: {vcpus: 1, memory: 256, lock: ticket, threads: 1, duration: 1.0}}\n"
        "axes: {env: [xen-pv, xen-pvh], vms: [1, 2]}\nrepetitions: 1\ntimeout: 300\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert (trials["status"] == "ok").all() and set(trials["accel"]) == {"xen"}, trials[["env", "accel", "error"]]
    assert sorted(zip(trials["env"], trials["vms"])) == [("xen-pv", 1), ("xen-pv", 2), ("xen-pvh", 1), ("xen-pvh", 2)]
    for row in trials.itertuples():
        facts = json.loads(row.guest_facts_json)
        assert len(facts) == row.vms and all(f["clocksource"] == "xen" and "steal_time" in f["pv_features"] for f in facts), facts
        if row.env == "xen-pv":  # Linux booted as a PV guest: "Hypervisor detected: Xen PV"
            assert all(f["hypervisor"] == "Xen PV" and "xen_pv" in f["pv_features"] for f in facts), facts
        else:  # a PVH guest is an HVM container to Linux: "Xen HVM", booted "on Xen PVH"
            assert all(f["hypervisor"] == "Xen HVM" and f["pv_features"].count("xen_pvh") == 1 for f in facts), facts
            assert not any("xen_pv" in f["pv_features"] for f in facts), facts
    steal = metrics[(metrics["metric"] == "guest_steal_pct") & metrics["vm"].isna()].set_index(["env", "vms"])["value"]
    for env in ("xen-pv", "xen-pvh"):  # two guests on the same physical CPU take turns: Xen counts steal
        assert steal[(env, 2)] > steal[(env, 1)] and steal[(env, 2)] > 0, steal
    tput = metrics[(metrics["metric"] == "throughput") & metrics["thread"].isna() & metrics["vm"].notna()]
    assert sorted(zip(tput["env"], tput["vms"])) == [("xen-pv", 1), ("xen-pv", 2), ("xen-pv", 2),
                                                     ("xen-pvh", 1), ("xen-pvh", 2), ("xen-pvh", 2)]
    assert (tput["value"] > 0).all()
    dom0 = _dom0(inventory)
    try:
        assert xen.xl_domains(dom0) == []  # every guest destroyed after its configuration
    finally:
        dom0.close()


@pytest.mark.timeout(3000)
def test_xen_hvm_guest_runs_a_trial(xen_host: tuple[vmhost.VMHost, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A fully virtualised guest: the device model (qemu-system-xen in dom0) loads the kernel and initrd through
    fw_cfg port I/O, every byte a trip from the nested guest to dom0's QEMU: about 60 KB/s here, so the guest
    takes minutes to reach its init (482 s measured) and the boot timeout is raised. Two trials (ticket, ttas)
    on one boot: the guest is reused within its configuration, as for kvm."""
    vm, inventory = xen_host
    monkeypatch.setenv("RUNNER_GUEST_BOOT_TIMEOUT", "1500")
    name = "pytest-xen-hvm"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: vmhosts, inventory: {inventory}}}\n"
        "workload: {name: lockbench, params: {env: xen-hvm, vcpus: 1, memory: 256, threads: 1, duration: 1.0}}\n"
        "axes: {lock: [ticket, ttas]}\nrepetitions: 1\ntimeout: 2400\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert len(trials) == 2 and (trials["status"] == "ok").all() and set(trials["accel"]) == {"xen"}, trials[["accel", "error"]]
    assert trials["boot_id"].nunique() == 1  # booted once, reused for both locks (guests.reuse: configuration)
    [facts] = json.loads(trials["guest_facts_json"].iloc[0])
    assert facts["hypervisor"] == "Xen HVM" and facts["clocksource"] == "xen", facts
    assert not {"xen_pv", "xen_pvh"} & set(facts["pv_features"]), facts  # neither PV nor PVH: full HVM
    tput = metrics[(metrics["metric"] == "throughput") & metrics["thread"].isna()]
    assert (tput["value"] > 0).all()
    dom0 = _dom0(inventory)
    try:
        assert xen.xl_domains(dom0) == []
        guest = json.loads(trials["guest_json"].iloc[0])["name"]
        serial = dom0.run(["cat", xen.console_log(guest, "hvm")], timeout=60).stdout
        assert "RUNNER-GUEST-INIT" in serial, serial[-500:]  # the emulated serial port went to the log file
    finally:
        dom0.close()


@pytest.mark.timeout(1200)
def test_a_killed_controller_leaves_no_domain_and_cleanup_destroys_leftovers(xen_host: tuple[vmhost.VMHost, Path],
                                                                            tmp_path: Path) -> None:
    """A controller SIGKILLed while its guest runs: the guard on dom0 sees its SSH connection close and
    destroys the domain. A domain left behind anyway (a controller that lost the network and never came
    back): `runner cleanup CAMPAIGN` destroys it with xl."""
    vm, inventory = xen_host
    name = "pytest-xen-kill"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: vmhosts, inventory: {inventory}}}\n"
        "workload: {name: command, params: {env: xen-pv, vcpus: 1, memory: 256, run: 'sleep 600'}}\n"
        "repetitions: 1\ntimeout: 900\nretry: {attempts: 1}\n"
    )
    dom0 = _dom0(inventory)
    try:
        proc = subprocess.Popen([str(Path(__file__).parents[1] / ".venv/bin/runner"), "launch", str(matrix),
                                 "--datasets", str(tmp_path / "ds")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # the event: the campaign's guest exists
            created = wait_for(lambda: proc.poll() is not None or xen.xl_domains(dom0), 900, poll=2)
            assert created and proc.poll() is None, "the campaign never created its domain"
        finally:
            proc.kill()
            proc.wait()
        # the guard's work: no fixed wait, only an upper bound
        assert wait_for(lambda: not xen.xl_domains(dom0), 300, poll=2), f"domains left after the controller died: {xen.xl_domains(dom0)}"
        # A leftover: a paused PV domain named like the campaign's guests.
        kernel = image.newest_kernel()
        dom0.put(kernel, "/tmp/pytest-vmlinuz")
        left = f"rnr-{campaign_slug(name)}-0-0badcafe"
        cfg = tmp_path / "left.cfg"
        cfg.write_text(f'name = "{left}"\ntype = "pv"\nmemory = 128\nvcpus = 1\nkernel = "/tmp/pytest-vmlinuz"\n'
                       'extra = "console=hvc0"\non_crash = "destroy"\n')
        dom0.put(cfg, "/tmp/pytest-left.cfg")
        assert dom0.run(["xl", "create", "-p", "/tmp/pytest-left.cfg"], timeout=120).ok
        assert xen.xl_domains(dom0) == [left]
        assert main(["cleanup", name, "--inventory", str(inventory)]) == 0
        assert xen.xl_domains(dom0) == []
    finally:
        dom0.close()


@pytest.mark.timeout(1200)
def test_guest_xen_role_creates_and_destroys_a_domain_idempotently(xen_host: tuple[vmhost.VMHost, Path],
                                                                   tmp_path: Path) -> None:
    """playbooks/guests.yml's guest_xen role for real, over SSH against the Xen host: create (directory,
    config, xl create), a second run that changes nothing, destroy, a second destroy that changes nothing.
    The guest is a PV kernel without a root filesystem: it panics at once and, with on_crash "preserve",
    stays listed as a stopped domain, so it costs the emulated host no CPU."""
    vm, inventory = xen_host
    dom0 = _dom0(inventory)
    name = f"rnr-{campaign_slug('pytest-xen-role')}-0-00c0ffee"
    try:
        dom0.put(image.newest_kernel(), "/tmp/pytest-vmlinuz")
        cfg = tmp_path / f"{name}.cfg"
        cfg.write_text(f'name = "{name}"\ntype = "pv"\nmemory = 128\nvcpus = 1\nkernel = "/tmp/pytest-vmlinuz"\n'
                       'extra = "console=hvc0 panic=-1"\non_crash = "preserve"\non_poweroff = "destroy"\n')

        def play(state: str) -> int:
            extravars = {"guest_xen_state": state, "guest_xen_domains": [{"name": name, "config": str(cfg)}],
                         "guest_xen_config_dir": "/etc/xen/runner-pytest"}
            res = run_playbook("guests.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "runs",
                               timeout=900)
            return res.stats["xen1"].changed

        assert play("present") == 3  # directory, config file, xl create
        assert xen.xl_domains(dom0) == [name]
        assert play("present") == 0
        assert play("absent") == 2  # xl destroy, config file
        assert xen.xl_domains(dom0) == []
        assert play("absent") == 0
    finally:
        xen.destroy(dom0, name)
        dom0.close()
