"""Guests and containers on a remote hypervisor host, reached through it, as on a lab.

The host is a test-bed hypervisor host (runner.testing.testbed): a network namespace with its own sshd, its own
libvirtd, guest network and image cache. Its guest bridge lives in that namespace, so the controller
cannot reach a guest directly: every guest SSH connection is a channel through the host's SSH connection.
Guests run under QEMU/TCG there (about 25 s to SSH-ready), so the matrices are small.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from runner.cli import main
from runner.hosts.base import Host
from runner.provision import container, libvirt
from runner.provision.inventory import connect, load_inventory
from runner.records.store import read_campaign
from runner.testing.testbed import TestBed
from tests.events import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.guest]
PROJECT = Path(__file__).resolve().parents[1]


def _host(bed: TestBed) -> Host:
    return connect(load_inventory(bed.inventory_path).hosts["tb1"])


def _matrix(tmp: Path, bed: TestBed, name: str, env: str, axes: str, extra: str = "", duration: float = 0.3, vcpus: int | None = None) -> Path:
    path = tmp / f"{name}.yml"
    guest = f"vcpus: {vcpus}, " if vcpus else ""
    guest += "" if "lock:" in axes else "lock: ttas, "
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: hypervisors, inventory: {bed.inventory_path}}}\n"
        f"workload: {{name: lockbench, params: {{env: {env}, {guest}threads: 2, duration: {duration}}}}}\n"
        f"axes:\n{axes}"
        f"repetitions: 1\ntimeout: 60\nretry: {{attempts: 1}}\n{extra}"
    )
    return path


def _left_on(host: Host, campaign: str) -> list[str]:
    return libvirt.list_campaign(host, campaign)


# The visible event that a trial is running in a guest: the trial's command first writes TRIAL_MARK on the guest's
# console, which the hypervisor host logs to a file under libvirt.LOG_DIR (the test bed's host shares this
# machine's /var/log), then sleeps; so a test acts mid-trial on the event, not after a guessed time.
TRIAL_MARK = "RUNNER-TEST-TRIAL-RUNNING"


def _marking_matrix(tmp: Path, bed: TestBed, name: str, locks: list[str], seconds: int) -> Path:
    """A kvm campaign of one-vCPU guests whose trials (one per lock) mark the console, then run `seconds`."""
    run = f'echo "{TRIAL_MARK} $RUNNER_LOCK" > /dev/console; sleep {seconds}; echo \'{{"ops": 1}}\''
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump({
        "campaign": name, "hosts": {"group": "hypervisors", "inventory": str(bed.inventory_path)},
        "workload": {"name": "command", "params": {"env": "kvm", "vcpus": 1, "run": run, "metrics": "json"}},
        "axes": {"lock": locks}, "repetitions": 1, "timeout": 60, "retry": {"attempts": 1},
    }, sort_keys=False))
    return path


def _consoles(name: str) -> list[Path]:
    return sorted(Path(libvirt.LOG_DIR).glob(f"rnr-{name}-*.log"))


def _trial_running(name: str) -> bool:
    return any(TRIAL_MARK in log.read_text(errors="replace") for log in _consoles(name))


def test_kvm_overcommit_on_a_remote_host_through_ssh(hypervisor_bed: TestBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bed, name = hypervisor_bed, "pytest-remote-kvm"
    matrix = _matrix(tmp_path, bed, name, "kvm", "  vms: [1, 2]\n  lock: [ttas, ticket]\n", vcpus=2)
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert len(trials) == 4 and (trials["status"] == "ok").all(), trials["error"].tolist()
    assert set(trials["host"]) == {"tb1"} and set(trials["accel"]) == {"tcg"}
    # Boot once per configuration: vms 1 and vms 2, each serving both locks.
    assert trials["boot_id"].nunique() == 2 and trials["boot_s"].notna().sum() == 2
    assert trials.groupby("vms")["boot_id"].nunique().tolist() == [1, 1]
    facts = [f for doc in trials["guest_facts_json"] for f in json.loads(doc)]
    assert {f["online_cpus"] for f in facts} == {"0-1"} and all(f["pins_applied"] == [[0], [1]] for f in facts)
    two = metrics[(metrics["vms"] == 2) & metrics["vm"].isna()]
    assert {"aggregate_throughput", "vm_jain", "vcpu_run_delay_s", "window_overlap"} <= set(two["metric"])
    assert "guest_steal_pct" not in set(metrics["metric"])  # TCG guests have no steal clock: null, not 0
    host = _host(bed)
    try:
        assert _left_on(host, name) == []  # destroyed at the end
        assert not host.run(["test", "-e", f"/sys/class/net/{libvirt.BRIDGE}"], timeout=30).ok  # bridge removed
        # The guest network was the host's own: the machine never had the bridge.
        assert not Path(f"/sys/class/net/{libvirt.BRIDGE}").exists()
        # The image went to the host's private cache once, by digest; a second campaign copies nothing.
        cache = bed.private_dir("tb1", "/var/cache/runner")
        images = sorted(cache.glob("images/*/vmlinuz"))
        assert len(images) == 1
        stamp = images[0].stat().st_mtime_ns
        again = _matrix(tmp_path, bed, f"{name}-again", "kvm", "  vms: [1]\n", vcpus=2)
        assert main(["launch", str(again), "--datasets", str(tmp_path / "ds")]) == 0, capsys.readouterr().out
        assert sorted(cache.glob("images/*/vmlinuz")) == images and images[0].stat().st_mtime_ns == stamp
    finally:
        host.close()


def test_container_campaign_on_a_remote_host(hypervisor_bed: TestBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bed, name = hypervisor_bed, "pytest-remote-container"
    matrix = _matrix(tmp_path, bed, name, "container", "  vcpus: [1, 2]\n")
    matrix.write_text(matrix.read_text().replace("repetitions: 1", "repetitions: 2"))
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    assert rc == 0, capsys.readouterr().out
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert len(trials) == 4 and (trials["status"] == "ok").all() and set(trials["accel"]) == {"none"}
    assert trials["boot_id"].nunique() == 2  # one container start per vcpus value
    tput = metrics[(metrics["metric"] == "throughput") & metrics["thread"].isna() & metrics["vm"].isna()]
    assert (tput["value"] > 0).all()
    host = _host(bed)
    try:
        assert container.list_campaign(host, name) == []
        assert len(container.list_campaign_images(host, name)) == 1
        assert main(["cleanup", name, "--datasets", str(tmp_path / "ds")]) == 0
        assert "container image" in capsys.readouterr().out
        assert container.list_campaign_images(host, name) == []
    finally:
        host.close()


def test_sigkilled_controller_leaves_no_guest_and_relaunch_completes(hypervisor_bed: TestBed, tmp_path: Path) -> None:
    """SIGKILL of the controller while a trial runs in a guest: the host's dead man's switch destroys the guest,
    and a relaunch runs what was not recorded, each trial once."""
    bed, name = hypervisor_bed, "pytest-remote-sigkill"
    matrix = _marking_matrix(tmp_path, bed, name, ["ttas", "ticket", "mutex"], seconds=4)
    argv = [sys.executable, "-m", "runner.cli", "launch", str(matrix), "--datasets", str(tmp_path / "ds"), "--quiet"]
    for stale in _consoles(name):  # an earlier run's console
        stale.unlink()
    host = _host(bed)
    try:
        proc = subprocess.Popen(argv, cwd=PROJECT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:  # mid-trial: the trial's mark is on its guest's console (or the launch ended without one)
            wait_for(lambda: _trial_running(name) or proc.poll() is not None, timeout=240, poll=0.2)
            assert proc.poll() is None and _trial_running(name), "no trial ran in a guest on tb1 before the launch ended"
            assert _left_on(host, name)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the controller and its local Dask workers
            proc.wait()
        assert wait_for(lambda: not _left_on(host, name), timeout=30, poll=0.5), "the dead man's switch on tb1 left a guest"
        done = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        _, trials, _ = read_campaign(name, tmp_path / "ds")
        ok = trials[trials["status"] == "ok"]
        assert sorted(ok["lock"]) == ["mutex", "ticket", "ttas"]
        assert ok["trial_id"].is_unique  # no trial measured twice
        assert _left_on(host, name) == []
    finally:
        host.close()


def test_hypervisor_sshd_killed_mid_trial(hypervisor_bed: TestBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The host's sshd dies while a guest trial runs: the trial fails with a reason naming the host, the
    campaign finishes (the host is dropped), and the guests go with the connection."""
    bed, name = hypervisor_bed, "pytest-remote-sshd"
    matrix = _marking_matrix(tmp_path, bed, name, ["ttas", "ticket"], seconds=20)
    host = _host(bed)
    try:
        killed: list[float] = []

        def killer() -> None:
            if wait_for(lambda: _trial_running(name), timeout=240, poll=0.2):  # the first trial's 20 s run has begun
                bed.kill_sshd("tb1")
                killed.append(time.monotonic())

        for stale in _consoles(name):  # an earlier run's console
            stale.unlink()
        started = time.monotonic()

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
        t.join(timeout=5)
        out = capsys.readouterr().out
        assert killed, "no trial of the campaign ran in a guest on tb1 (no mark on a guest's console)"
        assert rc == 1, f"sshd killed {killed[0] - started:.1f} s after the launch; {out}"
        _, trials, _ = read_campaign(name, tmp_path / "ds")
        # The trial the kill struck (it had marked its guest's console and was in its 20 s run) fails naming tb1
        # and what happened; tb1 is dropped, so the trial after it is recorded as not run.
        assert len(trials) == 2
        failed = trials[trials["status"] == "failed"].sort_values("started_at")["error"].tolist()
        assert failed and "tb1" in failed[0] and ("connection lost" in failed[0] or "cannot connect" in failed[0]), failed
        assert all("tb1" in e or "not run" in e for e in failed), failed
    finally:
        host.close()
        bed.start_sshd("tb1")
    host = _host(bed)
    try:
        assert wait_for(lambda: not _left_on(host, name), timeout=30, poll=0.5), "the guests did not go with the connection"
    finally:
        host.close()


def test_debian_image_on_a_remote_host(hypervisor_bed: TestBed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Debian disk image goes to the host once, by digest (qcow2, kernel, initrd), its guest boots it
    through an overlay in the host's own /var/lib/libvirt (removed at the end), and a container there runs
    the same root filesystem; "100%" of threads is the trial's 1 vCPU in both."""
    bed, name = hypervisor_bed, "pytest-remote-debian"
    matrix = tmp_path / f"{name}.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: hypervisors, inventory: {bed.inventory_path}}}\n"
        "workload: {name: lockbench, params: {guest_image: debian, vcpus: 1, lock: ttas, threads: '100%', duration: 0.3}}\n"
        "axes: {env: [kvm, container]}\nrepetitions: 1\ntimeout: 120\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert sorted(trials["env"]) == ["container", "kvm"] and (trials["status"] == "ok").all(), trials["error"].tolist()
    assert set(trials["guest_image"]) == {"debian"} and set(trials["host"]) == {"tb1"}
    assert len(metrics[metrics["metric"] == "thread_ops"]) == 2  # one thread in each
    facts = json.loads(trials[trials["env"] == "kvm"]["guest_facts_json"].item())[0]
    assert "root=/dev/vda" in facts["cmdline"]
    disks = sorted(bed.private_dir("tb1", "/var/cache/runner").glob("images/*/disk.qcow2"))
    assert len(disks) == 1 and (disks[0].parent / "initrd.img").is_file()
    overlays = bed.private_dir("tb1", "/var/lib/libvirt") / "images/runner"
    assert not overlays.exists() or list(overlays.iterdir()) == []
    host = _host(bed)
    try:
        assert _left_on(host, name) == [] and container.list_campaign(host, name) == []
    finally:
        host.close()
