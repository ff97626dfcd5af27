"""Guest environments in campaigns: pure parts, and real campaigns with KVM/TCG guests and podman containers.

The kvm campaign boots real guests under libvirt/QEMU (TCG here: the probe finds that KVM does not boot a
guest on these machines): vms 1 and 2 with 2 vCPUs on the same 2 host CPUs, lockbench in every guest.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.analysis.overcommit import overcommit_table
from runner.cli import main
from runner.execution import boots, guests, images, pervm
from runner.execution.environments import Outcome
from runner.hosts.local import LocalHost
from runner.provision import container, environments, libvirt
from runner.provision.guest import GuestSpec
from runner.provision.image import GuestImage
from runner.records.store import read_campaign
from runner.workloads import base
from runner.workloads.base import WorkloadContext
from runner.records.metric import Metric
from runner.workloads.lockbench import binary_name as lockbench_binary_name

PROJECT = Path(__file__).resolve().parents[1]
HERE = LocalHost()


def test_guest_params_defaults_and_passthrough() -> None:
    assert environments.get("kvm").guest_params({"lock": "ttas"}, 4) == {"vcpus": 4, "memory": 512, "vms": 1, "guest_kernel": "default"}
    got = environments.get("container").guest_params({"vcpus": 2, "memory": 256, "vms": 3, "pin": "spread", "guest_kernel": "x"}, 8)
    assert got == {"vcpus": 2, "memory": 256, "vms": 3, "pin": "spread"}


def test_catalog_has_default_and_nopvspin() -> None:
    img = GuestImage(Path("/i/vmlinuz"), Path("/i/initrd.img"), Path("/k"), "ssh-ed25519 AAAA", "6.1", "d")
    cat = images.guest_catalog(img, "kvm")
    assert sorted(cat) == ["default", "nopvspin"]
    assert cat["default"]["cmdline"] == "console=ttyS0 panic=-1 quiet"
    assert cat["nopvspin"]["cmdline"] == "console=ttyS0 panic=-1 quiet nopvspin"
    assert images.guest_catalog(img, "xen-pv")["default"]["cmdline"].startswith("console=hvc0 ")


def test_combine_relabels_per_vm_and_adds_totals() -> None:
    per_vm = [
        [Metric("throughput", 300.0, "ops/s"), Metric("thread_ops", 10.0, "ops", thread=0)],
        [Metric("throughput", 100.0, "ops/s"), Metric("thread_ops", 5.0, "ops", thread=0)],
    ]
    tel = [{"ssh_ready_s": 10.0, "guest_steal_pct": 2.0, "vcpu_run_delay_s": 1.5},
           {"ssh_ready_s": 12.0, "guest_steal_pct": 4.0, "vcpu_run_delay_s": None}]
    out = pervm.combine(per_vm, tel, base.get("lockbench"))
    by = {(m.name, m.vm, m.thread): m.value for m in out}
    assert by[("throughput", 0, None)] == 300 and by[("thread_ops", 1, 0)] == 5
    assert by[("throughput", None, None)] == by[("aggregate_throughput", None, None)] == 400
    assert by[("vm_jain", None, None)] == pytest.approx(400**2 / (2 * (300**2 + 100**2)))
    assert by[("vms", None, None)] == 2
    assert by[("ssh_ready_s", None, None)] == 12 and by[("guest_steal_pct", None, None)] == 3
    assert ("vcpu_run_delay_s", 1, None) not in by and ("vcpu_run_delay_s", None, None) not in by  # not for every VM


def test_merge_outcomes_first_failure_wins() -> None:
    ok = Outcome("ok", None, (Metric("throughput", 1.0, "ops/s"),), 2.0)
    bad = Outcome("timeout", "vm 1 ran past its timeout", (), 5.0)
    merged = pervm.merge_outcomes([ok, bad], [{}, {}], base.get("lockbench"), accel="tcg", guest_json="{}")
    assert (merged.status, merged.error, merged.metrics, merged.workload_wall_s, merged.accel) == ("timeout", bad.error, (), 5.0, "tcg")


def test_telemetry_deltas() -> None:
    before = "cpu  100 0 100 800 0 0 0 0 0 0\n"
    after = "cpu  150 0 150 850 0 0 0 50 0 0\n"
    assert pervm.steal_pct(before, after) == pytest.approx(100 * 50 / 200)
    assert pervm.steal_pct(before, before) is None
    assert pervm.run_delay_s({0: (1, 1_000_000_000, 1), 1: (1, 0, 1)}, {0: (2, 3_000_000_000, 2), 1: (2, 500_000_000, 2)}) == 2.5
    assert pervm.run_delay_s({}, {0: (1, 1, 1)}) is None


def test_common_window_and_overlap() -> None:
    start, end, overlap = pervm.common_window([(10.0, 12.0), (10.5, 13.0)])
    assert (start, end) == (10.5, 12.0)
    assert overlap == pytest.approx([0.75, 0.6])
    assert pervm.common_window([(0.0, 1.0), (2.0, 3.0)])[2] == [0.0, 0.0]  # disjoint: no common window


def test_window_plan_starts_long_and_stops_together() -> None:
    lockbench, command = base.get("lockbench"), base.get("command")
    seconds, run = guests.window_plan(lockbench, {"duration": 2, "lock": "ttas"}, 2, timeout=60)
    assert seconds == 2 and run == {"duration": 24.0, "lock": "ttas"}  # 2 x 2 + 20 s, stopped after 2 s
    assert guests.window_plan(lockbench, {}, 3, timeout=60)[0] == 1.0  # lockbench's default duration
    assert guests.window_plan(lockbench, {"duration": 30}, 2, timeout=33) is None  # no room under the timeout
    assert guests.window_plan(lockbench, {"duration": 2}, 1, timeout=60) is None  # one guest: its own time
    assert guests.window_plan(command, {"run": "true"}, 2, timeout=60) is None  # cannot be stopped early
    ctx = WorkloadContext(host="g", workdir="/opt/runner", cpus=2, extra={"run_id": "abc"})
    argv = lockbench.stop_argv(ctx)
    assert argv[-2:] == [f"/opt/runner/{lockbench_binary_name()}.abc.pid", lockbench_binary_name()[:15]]
    assert command.stop_argv(ctx) is None


def test_guest_facts_parser() -> None:
    text = ("kernel_release 6.1.0-57-amd64\ncmdline console=ttyS0 panic=-1 quiet runner.ip=10.214.0.10/24\n"
            "online_cpus 0-1\nclocksource kvm-clock\nhypervisor  KVM\npv steal_time\npv kvm_clock\n")
    facts = boots.parse_guest_facts(text)
    assert facts["kernel_release"] == "6.1.0-57-amd64" and facts["online_cpus"] == "0-1"
    assert facts["cmdline"].endswith("runner.ip=10.214.0.10/24") and facts["hypervisor"] == "KVM"
    assert facts["pv_features"] == ["steal_time", "kvm_clock"]


def test_guest_needs_come_from_the_workload_plugin(tmp_path: Path) -> None:
    assert base.get("command").guest_files(tmp_path) == {}
    files = base.get("lockbench").guest_files(tmp_path)
    (guest_path, local), = files.items()
    assert guest_path.startswith(base.GUEST_WORKDIR + "/lockbench-") and local.is_file()
    assert "not a dynamic executable" in subprocess.run(["ldd", str(local)], capture_output=True, text=True).stdout + \
        subprocess.run(["ldd", str(local)], capture_output=True, text=True).stderr


# ------------------------------------------------------------------------------------ real campaigns


def _matrix(tmp: Path, name: str, env: str, axes: str, extra: str = "repetitions: 1\n") -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        f"workload: {{name: lockbench, params: {{env: {env}, lock: ttas, threads: 2, duration: 0.3}}}}\n"
        f"axes:\n{axes}"
        f"{extra}timeout: 60\nretry: {{attempts: 1}}\n"
    )
    return path


def _nothing_left(campaign: str) -> None:
    assert libvirt.list_campaign(HERE, campaign) == []
    assert campaign not in libvirt.virsh(HERE, "list", "--all", "--name")
    assert not Path(f"/sys/class/net/{libvirt.BRIDGE}").exists()


@pytest.mark.integration
@pytest.mark.guest
def test_kvm_overcommit_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "pytest-guest-overcommit"
    matrix = _matrix(tmp_path, name, "kvm", "  vcpus: [2]\n  vms: [1, 2]\n", "repetitions: 1\nprobes: [schedstat, cpufreq, kvm_exits]\n")
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr().out
    assert rc == 0, out
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert sorted(trials["status"]) == ["ok", "ok"]
    assert set(trials["accel"]) == {"tcg"} and set(metrics["accel"]) == {"tcg"}  # never reported as kvm
    for row in trials.itertuples():
        spec = GuestSpec.from_json(row.guest_json)
        assert (spec.env, spec.accel, spec.vcpus, spec.vms, spec.index) == ("kvm", "tcg", 2, row.vms, 0)
        assert spec.host_cpus == (0, 1) and spec.guest_kernel == "default"
        assert row.wall_s > row.workload_wall_s > 0
    tput = metrics[(metrics["metric"] == "throughput") & metrics["thread"].isna()]
    two = tput[tput["vms"] == 2]
    assert sorted(two["vm"].dropna().astype(int)) == [0, 1]
    total = two[two["vm"].isna()]["value"].item()
    assert total == pytest.approx(two["value"][two["vm"].notna()].sum())
    for metric in ("aggregate_throughput", "vm_jain", "vms", "ssh_ready_s", "vcpu_run_delay_s"):
        rows = metrics[(metrics["metric"] == metric) & metrics["vm"].isna()]
        assert sorted(rows["vms"]) == [1, 2], metric
    # A TCG guest has no steal clock: no steal figure is recorded (null), rather than a measured-looking 0.
    assert metrics[metrics["metric"] == "guest_steal_pct"].empty
    assert not any("steal_time" in f["pv_features"] for doc in trials["guest_facts_json"] for f in json.loads(doc))
    jain = metrics[(metrics["metric"] == "vm_jain") & (metrics["vms"] == 2)]["value"].item()
    assert 0.5 <= jain <= 1.0
    assert trials["boot_id"].nunique() == 2 and trials["boot_s"].notna().all()  # vms 1 and 2: two configurations
    assert set(trials["guest_vcpus"]) == {2} and set(trials["guest_kernel"]) == {"default"}
    assert set(trials["guest_pins"]) == {"[[0], [1]]"} and trials["guest_cmdline"].str.contains("runner.ip=").all()
    for facts in trials["guest_facts_json"]:
        doc = json.loads(facts)
        assert [f["online_cpus"] for f in doc] in (["0-1"], ["0-1", "0-1"])
        assert all(f["pins_applied"] == [[0], [1]] for f in doc)
    two_row = trials[trials["vms"] == 2].iloc[0]
    assert two_row.window_end > two_row.window_start
    overlap = metrics[(metrics["metric"] == "window_overlap") & (metrics["vms"] == 2)]
    assert sorted(overlap["vm"].dropna().astype(int)) == [0, 1] and ((overlap["value"] > 0) & (overlap["value"] <= 1)).all()
    # The two guests were started with 20.6 s to run and the runner's stop ended both measurements before
    # that deadline (lockbench's stopped_early: the signal, not the clock, ended its loop); a one-guest
    # run measures its own 0.3 s and is never stopped. No wall-time bound: a stalled machine only makes
    # the joins after the stop slower.
    stopped = metrics[(metrics["metric"] == "stopped_early") & metrics["vm"].notna()]
    assert sorted(zip(stopped["vms"], stopped["value"])) == [(1, 0.0), (2, 1.0), (2, 1.0)], stopped
    # The probes ran on the hypervisor host (schedstat: the guests' vCPU threads) and inside every guest (side
    # guest, its vm); kvm_exits reads the hypervisor host only, never inside a guest.
    probed = metrics[metrics["probe"].notna()]
    inside = probed[probed["side"] == "guest"]
    assert set(probed["side"]) == {"host", "guest"}
    assert "kvm_exits" not in set(inside["probe"])
    for vms in (1, 2):
        rows = inside[inside["vms"] == vms]
        assert sorted(rows["vm"].dropna().astype(int).unique()) == list(range(vms)), vms
        for vm in range(vms):
            assert {"schedstat", "cpufreq"} <= set(rows.loc[rows["vm"] == vm, "probe"]), (vms, vm)
    assert "schedstat" in set(probed.loc[probed["side"] == "host", "probe"])
    cells, per_vm = overcommit_table(metrics)
    k2 = cells[cells["k"] == 2].iloc[0]
    assert k2["vms_seen"] == 2 and k2["efficiency"] > 0 and k2["ideal_per_vm"] == 0.5
    assert sorted(per_vm[per_vm["vms"] == 2]["vm"]) == [0, 1]
    _nothing_left(name)


@pytest.mark.integration
@pytest.mark.guest
def test_container_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "pytest-guest-container"
    matrix = _matrix(tmp_path, name, "container", "  vcpus: [1, 2]\n")
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    assert rc == 0, capsys.readouterr().out
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert sorted(trials["status"]) == ["ok", "ok"] and set(trials["accel"]) == {"none"}
    for row in trials.itertuples():
        doc = json.loads(row.guest_json)
        assert (doc["env"], doc["vcpus"], doc["vcpu_pins"]) == ("container", row.vcpus, [[c] for c in range(row.vcpus)])
    tput = metrics[(metrics["metric"] == "throughput") & metrics["thread"].isna() & metrics["vm"].isna()]
    assert sorted(tput["vcpus"]) == [1, 2] and (tput["value"] > 0).all()
    assert container.list_campaign(HERE, name) == []
    images = container.list_campaign_images(HERE, name)
    assert len(images) == 1  # built once for both trials, removed by cleanup
    assert main(["cleanup", name]) == 0
    assert container.list_campaign_images(HERE, name) == []
    ps = subprocess.run([*container.container_cli(HERE), "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
    assert name not in ps.stdout


@pytest.mark.integration
@pytest.mark.guest
def test_guests_boot_once_per_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two locks x 2 repetitions in one configuration: one boot serves all four trials; with
    guests.reuse: trial, every trial boots its own."""
    for reuse, boots in (("configuration", 1), ("trial", 4)):
        name = f"pytest-guest-reuse-{reuse}"
        matrix = _matrix(tmp_path, name, "kvm", "  lock: [ttas, ticket]\n", f"repetitions: 2\nguests: {{reuse: {reuse}}}\n")
        matrix.write_text(matrix.read_text().replace("lock: ttas, ", "vcpus: 1, "))
        assert main(["plan", str(matrix), "--show", "0"]) == 0
        assert f"guest boots: {boots}" in capsys.readouterr().out
        rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
        assert rc == 0, capsys.readouterr().out
        metrics, trials, _ = read_campaign(name, tmp_path / "ds")
        assert (trials["status"] == "ok").all() and len(trials) == 4
        assert trials["boot_id"].nunique() == boots
        assert trials["boot_s"].notna().sum() == boots  # the boot's time once per boot
        assert len(metrics[(metrics["metric"] == "ssh_ready_s") & metrics["vm"].isna()]) == boots
        _nothing_left(name)


def test_a_failed_guest_trial_says_which_guests_and_never_accel_none() -> None:
    from runner.errors import ProvisionError
    from runner.execution.worker import _guest_fields

    exc = ProvisionError("guest vm 0 on tb1: no SSH")
    assert _guest_fields({"env": "kvm"}, exc) == {"accel": None, "guest_json": None, "guest": None}  # unknown, not "none"
    assert _guest_fields({"env": "container"}, exc)["accel"] == "none"
    assert _guest_fields({}, exc) == {}  # the bare host: nothing to say
    environments.annotate(exc, {"accel": "tcg", "guest_json": '{"env": "kvm"}', "extra": {"boot_id": "b"}})
    assert _guest_fields({"env": "kvm"}, exc) == {"accel": "tcg", "guest_json": '{"env": "kvm"}', "guest": {"boot_id": "b"}}
