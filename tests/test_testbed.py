"""The namespace test bed: real sshds reachable by the real ssh client and Ansible; nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runner.testbed import PREFIX, TestBed, cleanup_stale

pytestmark = [pytest.mark.netns, pytest.mark.integration]


def ssh(bed: TestBed, address: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={bed.known_hosts}", "-o", "ConnectTimeout=5", "-i", str(bed.key_path),
         f"root@{address}", *command],
        capture_output=True, text=True, timeout=30, check=False,
    )


def leftovers(bridge: str, directory: Path) -> list[str]:
    """Anything of this test bed still on the machine: namespaces, links, live processes, files."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [line.split()[0] for line in netns.splitlines() if line.startswith(bridge + "h")]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout)
    found += [lk["ifname"] for lk in links if lk["ifname"] == bridge or lk["ifname"].startswith(bridge + "v")]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(directory) in cmdline and state != "Z":  # this machine's init leaves zombies unreaped
            found.append(f"process {pid}: {cmdline.replace(chr(0), ' ')}")
    if directory.exists():
        found.append(str(directory))
    return found


def test_up_ssh_with_generated_known_hosts_then_down_leaves_nothing(make_testbed):
    bed = make_testbed(2)
    assert [h.name for h in bed.hosts] == ["tb1", "tb2"]
    assert len({h.address for h in bed.hosts}) == 2
    assert all(h.sshd_pid is not None for h in bed.hosts)
    for h in bed.hosts:
        proc = ssh(bed, h.address, "ip", "-o", "-4", "addr", "show", "eth0")
        assert proc.returncode == 0, proc.stderr
        assert f"{h.address}/24" in proc.stdout  # the command ran inside that host's namespace
    bed.down()
    assert leftovers(bed.bridge, bed.dir) == []
    bed.down()  # twice is harmless


def test_two_testbeds_coexist_on_separate_subnets(make_testbed):
    a, b = make_testbed(1), make_testbed(1)
    assert a.bridge != b.bridge
    assert a.hosts[0].address.rsplit(".", 1)[0] != b.hosts[0].address.rsplit(".", 1)[0]
    assert all(len(name) < 15 for bed in (a, b) for name in (bed.bridge, bed.hosts[0].veth))
    for bed in (a, b):
        assert ssh(bed, bed.hosts[0].address, "true").returncode == 0


def test_fault_helpers_cut_and_restore_a_host(make_testbed):
    bed = make_testbed(1)
    h = bed.hosts[0]
    bed.link_down(h)
    with pytest.raises(OSError):
        socket.create_connection((h.address, h.port), timeout=0.5).close()
    bed.link_up(h)
    socket.create_connection((h.address, h.port), timeout=2).close()
    bed.kill_sshd("tb1")
    assert bed.host("tb1").sshd_pid is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((h.address, h.port), timeout=2).close()
    restarted = bed.start_sshd("tb1")
    assert restarted.sshd_pid is not None and restarted.sshd_pid != h.sshd_pid
    assert ssh(bed, h.address, "true").returncode == 0


def test_inventory_works_for_ansible(make_testbed, tmp_path):
    bed = make_testbed(2)
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")  # isolate from any ansible.cfg around
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.run(
        [ansible, "-i", str(bed.inventory_path), "testbed", "-m", "ansible.builtin.ping", "-o"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 2


def test_cli_up_and_down_from_separate_processes(tmp_path):
    directory = tmp_path / "clibed"
    cli = [sys.executable, "-m", "runner.testbed"]
    up = subprocess.run([*cli, "up", "2", "--dir", str(directory)], capture_output=True, text=True, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == str(directory / "hosts.yml")
        bed = TestBed.load(directory)
        assert ssh(bed, bed.hosts[1].address, "true").returncode == 0
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(directory)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert leftovers(bed.bridge, directory) == []


def test_cleanup_stale_removes_orphans_and_spares_live_beds(make_testbed, tmp_path):
    live = make_testbed(1)
    directory = tmp_path / "orphan"
    cli = [sys.executable, "-m", "runner.testbed"]
    subprocess.run([*cli, "up", "1", "--dir", str(directory)], check=True, capture_output=True, timeout=60)
    orphan = TestBed.load(directory)
    shutil.rmtree(directory)  # as if the run that made it crashed and its temporary files went away
    removed = cleanup_stale()
    assert f"{orphan.bridge}h1" in removed and orphan.bridge in removed
    assert leftovers(orphan.bridge, directory) == []
    assert not any(name.startswith(live.bridge) for name in removed)
    assert ssh(live, live.hosts[0].address, "true").returncode == 0


def test_names_are_prefixed_and_short(testbed):
    assert testbed.bridge.startswith(PREFIX)
    for h in testbed.hosts:
        assert h.netns.startswith(testbed.bridge) and h.veth.startswith(testbed.bridge)
        assert len(h.veth) < 15
    assert len(testbed.hosts) == 3
