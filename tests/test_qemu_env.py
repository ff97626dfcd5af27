"""The `qemu` environment (plain QEMU, no libvirt): its pure parts, and lockbench over-commit campaigns (vms 1
and 2) on this machine and on a remote test-bed hypervisor host reached through SSH.

This machine's /dev/kvm does not boot a guest (docs/guests.md), so the probe falls back to TCG and the
trials record accel tcg.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import ProvisionError, UsageError
from runner.hosts.base import Host
from runner.hosts.local import LocalHost
from runner.provision import environments, libvirt
from runner.provision.environments import qemu
from runner.provision.guest import GuestSpec, describe_guest
from runner.provision.inventory import connect, load_inventory
from runner.provision.topology import synthetic_topology
from runner.records.store import read_campaign
from runner.testing.testbed import TestBed

PROJECT = Path(__file__).resolve().parents[1]
CATALOG = {"default": {"kernel": "/i/vmlinuz", "initrd": "/i/initrd.img", "cmdline": "console=ttyS0 panic=-1"}}
TOPO = synthetic_topology(1, 4, 1, 2)


def _spec(**params: object) -> GuestSpec:
    return describe_guest("qemu", {"vcpus": 2, "memory": 256, "guest_kernel": "default", **params}, TOPO, CATALOG, "c1", 0,
                          address="10.214.0.10/24")


def test_qemu_is_an_environment_like_kvm() -> None:
    env = environments.get("qemu")
    assert env.starts_guests and env.virtual_machines and env.boots_kernel
    assert env.accels == ("kvm", "tcg") and env.host_tools[0] == ("qemu-system-x86_64",)
    assert env.setup_seconds({"vms": 2}) == 2 * env.setup_estimate_s
    assert "qemu" in environments.known() and "qemu" in environments.guest_names()
    with pytest.raises(UsageError, match="guest_numa 3 virtual nodes need at least 3 vCPUs"):
        env.check_params({"guest_numa": 3, "vcpus": 2})
    with pytest.raises(UsageError, match="allowed: kvm, tcg"):
        _spec(accel="xen")


def test_qemu_argv_pins_boots_the_kernel_and_joins_the_bridge() -> None:
    spec = _spec(accel="tcg")
    argv = qemu.qemu_argv(spec, tap="rnrq01234567", console_log="/l/g.log")
    assert argv[:4] == ["taskset", "-c", "0-1", "qemu-system-x86_64"]  # the emulator on the guest's host CPUs
    assert argv[argv.index("-name") + 1] == f"{spec.name},debug-threads=on"  # vCPU threads named "CPU n/TCG"
    assert argv[argv.index("-accel") + 1] == "tcg" and "-cpu" not in argv
    assert (argv[argv.index("-m") + 1], argv[argv.index("-smp") + 1]) == ("256", "2")
    assert argv[argv.index("-kernel") + 1] == "/i/vmlinuz" and argv[argv.index("-initrd") + 1] == "/i/initrd.img"
    assert argv[argv.index("-append") + 1].endswith("runner.ip=10.214.0.10/24")
    assert argv[argv.index("-netdev") + 1] == "tap,id=n0,ifname=rnrq01234567,script=no,downscript=no"
    assert argv[argv.index("-device") + 1] == f"virtio-net-pci,netdev=n0,mac={libvirt.mac_address(spec.name)}"
    assert argv[argv.index("-serial") + 1] == "file:/l/g.log" and argv[-1] == "-daemonize"
    assert argv[argv.index("-pidfile") + 1] == f"{qemu.RUN_DIR}/{spec.name}.pid"
    kvm = qemu.qemu_argv(_spec(accel="kvm", pin="none"), tap=None, console_log="/l/g.log")
    assert kvm[0] == "qemu-system-x86_64" and kvm[kvm.index("-cpu") + 1] == "host" and "-netdev" not in kvm


def test_qemu_argv_guest_numa_and_disk() -> None:
    spec = _spec(vcpus=4, guest_numa=2, disk="/o/rnr-c1-0-x.qcow2")
    argv = qemu.qemu_argv(spec, tap="t", console_log="/l")
    numa = [argv[i + 1] for i, a in enumerate(argv) if a == "-numa"]
    assert numa == ["node,nodeid=0,cpus=0-1,memdev=m0", "node,nodeid=1,cpus=2-3,memdev=m1"]
    mems = [argv[i + 1] for i, a in enumerate(argv) if a == "-object"]
    assert mems == [f"memory-backend-ram,id=m{j},size=128M,host-nodes={spec.numa_cells[j][2]},policy=bind" for j in (0, 1)]
    assert argv[argv.index("-drive") + 1] == "file=/o/rnr-c1-0-x.qcow2,format=qcow2,if=virtio"


def test_qemu_refuses_xen_guests_and_reads_pins() -> None:
    with pytest.raises(ProvisionError, match="kvm or tcg, not xen"):
        qemu.qemu_argv(describe_guest("xen-pv", {"vcpus": 1, "memory": 256, "guest_kernel": "default"}, TOPO, CATALOG, "c", 0),
                       tap=None, console_log="/l")
    assert qemu.parse_pins("1 1\n0 0\n") == ((0,), (1,))
    assert qemu.parse_pins("0 0-2,5\n") == ((0, 1, 2, 5),)
    assert len(qemu.tap_name("rnr-some-long-campaign-name-0-0123abcd")) <= 15


def _left(host: Host, campaign: str) -> list[str]:
    return environments.get("qemu").leftovers(host, campaign)


def _check_overcommit(ds: Path, name: str) -> None:
    metrics, trials, _ = read_campaign(name, ds)
    assert sorted(trials["status"]) == ["ok", "ok"], trials["error"].tolist()
    assert set(trials["env"]) == {"qemu"} and set(trials["accel"]) == {"tcg"}  # never reported as kvm
    for row in trials.itertuples():
        spec = GuestSpec.from_json(row.guest_json)
        assert (spec.env, spec.accel, spec.vcpus, spec.vms) == ("qemu", "tcg", 2, row.vms)
    facts = [f for doc in trials["guest_facts_json"] for f in json.loads(doc)]
    assert len(facts) == 3 and {f["online_cpus"] for f in facts} == {"0-1"}
    assert all(f["pins_applied"] == [[0], [1]] for f in facts)  # taskset on the vCPU threads, read back
    two = metrics[(metrics["vms"] == 2) & metrics["vm"].isna()]
    assert {"throughput", "aggregate_throughput", "vm_jain", "vms", "ssh_ready_s", "vcpu_run_delay_s", "window_overlap"} <= set(two["metric"])
    per_vm = metrics[(metrics["vms"] == 2) & (metrics["metric"] == "throughput") & metrics["vm"].notna() & metrics["thread"].isna()]
    assert sorted(per_vm["vm"].astype(int)) == [0, 1]
    assert two[two["metric"] == "throughput"]["value"].item() == pytest.approx(per_vm["value"].sum())
    assert trials["boot_id"].nunique() == 2  # vms 1 and 2: two configurations


def _launch_overcommit(tmp_path: Path, name: str, group: str, inventory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`runner launch` of a lockbench over-commit campaign (vms 1 and 2, 2 vCPUs) in qemu guests, then checks."""
    matrix = tmp_path / f"{name}.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: {group}, inventory: {inventory}}}\n"
        "workload: {name: lockbench, params: {env: qemu, vcpus: 2, lock: ttas, threads: 2, duration: 0.3}}\n"
        "axes:\n  vms: [1, 2]\nrepetitions: 1\ntimeout: 60\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    _check_overcommit(tmp_path / "ds", name)


@pytest.mark.integration
@pytest.mark.guest
@pytest.mark.slow
def test_qemu_overcommit_campaign_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "pytest-qemu-overcommit"
    _launch_overcommit(tmp_path, name, "local", PROJECT / "inventory", capsys)
    here = LocalHost()
    assert _left(here, name) == []  # every QEMU process and its files gone
    assert not Path(f"/sys/class/net/{libvirt.BRIDGE}").exists()  # bridge removed with the last guest
    assert not [n for n in Path("/sys/class/net").iterdir() if n.name.startswith("rnrq")]  # tap devices too
    assert not _probes_left()  # the accelerator probe's QEMU (it hangs here under KVM) was killed


def _probes_left() -> list[str]:
    """Processes of the qemu environment's accelerator probe, and their pid files."""
    procs = subprocess.run(["pgrep", "-af", "rnr-qprobe-"], capture_output=True, text=True).stdout.splitlines()
    return [p for p in procs if "pgrep" not in p] + [str(f) for f in Path(qemu.RUN_DIR).glob("rnr-qprobe-*")]


@pytest.mark.integration
@pytest.mark.netns
@pytest.mark.guest
@pytest.mark.slow
def test_qemu_overcommit_campaign_on_a_remote_host(hypervisor_bed: TestBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bed, name = hypervisor_bed, "pytest-remote-qemu"
    _launch_overcommit(tmp_path, name, "hypervisors", bed.inventory_path, capsys)
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert set(trials["host"]) == {"tb1"}
    host = connect(load_inventory(bed.inventory_path).hosts["tb1"])
    try:
        assert _left(host, name) == []
        assert not host.run(["test", "-e", f"/sys/class/net/{libvirt.BRIDGE}"], timeout=30).ok  # the host's bridge, removed
        # The guest network was the host's own: this machine never had the bridge, and no libvirt domain was made.
        assert not Path(f"/sys/class/net/{libvirt.BRIDGE}").exists()
        assert libvirt.list_campaign(host, name) == []
    finally:
        host.close()


@pytest.mark.integration
def test_cleanup_stops_a_campaigns_left_qemu_guest_only() -> None:
    """A QEMU guest left by a killed campaign (its pid file in RUN_DIR, its process named like the guest) is
    listed and stopped by `runner cleanup`; another campaign's (a name with this one's as prefix) is kept."""
    import subprocess
    import sys

    from runner.cli.cleanup import cleanup

    mine, other = "pytest-qemu-left", "pytest-qemu-left-1"
    names = {c: describe_guest("qemu", {"vcpus": 1, "memory": 64, "guest_kernel": "default"}, TOPO, CATALOG, c, 0).name for c in (mine, other)}
    Path(qemu.RUN_DIR).mkdir(parents=True, exist_ok=True)
    procs = {}
    for c, name in names.items():  # stands in for QEMU: a process whose command line names the guest like `-name`
        procs[c] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", f"{name},debug-threads=on"])
        Path(f"{qemu.RUN_DIR}/{name}.pid").write_text(f"{procs[c].pid}\n")
    try:
        planned = cleanup(mine, dry_run=True)
        assert planned.guests == (("QEMU guest", names[mine]),) and procs[mine].poll() is None
        assert cleanup(mine).guests == (("QEMU guest", names[mine]),)
        assert procs[mine].wait(timeout=30) is not None  # stopped (SIGTERM) by the destroy command
        assert not Path(f"{qemu.RUN_DIR}/{names[mine]}.pid").exists()
        assert procs[other].poll() is None and _left(LocalHost(), other) == [names[other]]
    finally:
        for c, name in names.items():
            procs[c].kill()
            procs[c].wait()
            Path(f"{qemu.RUN_DIR}/{name}.pid").unlink(missing_ok=True)
