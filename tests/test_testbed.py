"""The namespace test bed: real sshds reachable by the real ssh client and Ansible; nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from runner.errors import UsageError
from runner.provision.inventory import load_inventory
from runner.testing.testbed import (
    LOGIN_FILES,
    PLAIN_BASHRC,
    PREFIX,
    ROOT_HOME,
    STATE_FILE,
    STATE_VERSION,
    TestBed,
    cleanup_stale,
)
from tests.events import wait_for

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
    cli = [sys.executable, "-m", "runner.testing.testbed"]
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
    cli = [sys.executable, "-m", "runner.testing.testbed"]
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


def test_hosts_run_a_plain_shell_not_this_machines_start_up_files(testbed):
    """Root's shell start-up files on the test-bed hosts are the bed's plain ones (a lab host does not carry
    this machine's pyenv), only inside the hosts' mount namespaces: this machine's own stay as they are."""
    mine = {name: (ROOT_HOME / name).read_bytes() for name in LOGIN_FILES if (ROOT_HOME / name).exists()}
    for h in testbed.hosts:
        for name in mine:
            proc = ssh(testbed, h.address, "cat", f"~/{name}")
            assert proc.returncode == 0 and proc.stdout == PLAIN_BASHRC, (name, proc.stdout[:200], proc.stderr)
        proc = ssh(testbed, h.address, 'echo "${PYENV_ROOT-unset} $PATH"')
        assert proc.stdout.split()[0] == "unset" and ".pyenv" not in proc.stdout, proc.stdout
    assert {name: (ROOT_HOME / name).read_bytes() for name in mine} == mine


# ----- hypervisor hosts: their own libvirtd in a private mount namespace --------------------------------
VIRSH = ("virsh", "-c", "qemu:///system")


def netns_procs(netns: str) -> dict[int, str]:
    """pid -> command name of the live processes in a network namespace."""
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout
    procs = {}
    for pid in map(int, out.split()):
        if alive(pid):
            procs[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
    return procs


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def remote_libvirtd_pid(bed: TestBed, host: str) -> int:
    """The pid in the host's own /run/libvirtd.pid, read over SSH."""
    proc = ssh(bed, bed.host(host).address, "cat", "/run/libvirtd.pid")
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.fixture(scope="module")
def mixed_bed(_netns_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    """tb1 a hypervisor host, tb2 a plain host. Do not inject faults into it."""
    bed = TestBed.up(2, tmp_path_factory.mktemp("hvbed"), "bed", hypervisors=1)
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture
def make_hypervisor_bed(_netns_session: None, tmp_path: Path) -> Iterator[Callable[[], TestBed]]:
    """A fresh test bed of one hypervisor host per call, for tests that break it; removed after the test."""
    beds: list[TestBed] = []

    def make() -> TestBed:
        beds.append(TestBed.up(1, tmp_path, f"hv{len(beds)}", hypervisors=1))
        return beds[-1]

    try:
        yield make
    finally:
        for bed in beds:
            bed.down()


def test_hypervisor_host_answers_virsh_from_its_own_libvirtd(mixed_bed):
    bed, h = mixed_bed, mixed_bed.host("tb1")
    listed = ssh(bed, h.address, *VIRSH, "list", "--all", "--name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == []  # a fresh libvirtd: none of this machine's domains
    if Path("/run/libvirt/libvirt-sock").exists():  # this machine's libvirtd runs: read-only look at it
        machine = subprocess.run([*VIRSH, "list", "--all", "--name"], capture_output=True, text=True,
                                 timeout=20, check=False)
        if machine.returncode == 0:
            assert not set(machine.stdout.split()) & set(listed.stdout.split())
    # The libvirtd that answered is the one in the host's namespaces, not this machine's.
    pid = remote_libvirtd_pid(bed, "tb1")
    assert netns_procs(h.netns).get(pid) == "libvirtd"
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    machine_pidfile = Path("/run/libvirtd.pid")
    assert not machine_pidfile.exists() or machine_pidfile.read_text().strip() != str(pid)
    assert "libvirtd" not in netns_procs(bed.host("tb2").netns).values()  # a plain host runs none
    # Its configuration is private: a network defined over SSH lands in its copy of /etc/libvirt.
    name = f"rnrtest{uuid.uuid4().hex[:8]}"
    xml = bed.dir / f"{name}.xml"  # the hosts share this machine's filesystem outside their private dirs
    xml.write_text(f"<network><name>{name}</name><bridge name='rnrtestbr0'/></network>\n")
    defined = ssh(bed, h.address, *VIRSH, "net-define", str(xml))
    assert defined.returncode == 0, defined.stderr
    try:
        assert (bed.private_dir(h, "/etc/libvirt") / "qemu" / "networks" / f"{name}.xml").exists()
        assert not Path(f"/etc/libvirt/qemu/networks/{name}.xml").exists()
        assert name in ssh(bed, h.address, *VIRSH, "net-list", "--all", "--name").stdout.split()
    finally:
        ssh(bed, h.address, *VIRSH, "net-undefine", name)
    assert (bed.private_dir(h, "/var/lib/libvirt") / "qemu").is_dir()  # libvirtd's state went there too


def test_bridge_made_over_ssh_lives_in_the_hosts_namespace(mixed_bed):
    bed, h = mixed_bed, mixed_bed.host("tb1")
    made = ssh(bed, h.address, "ip", "link", "add", "rnrtest0", "type", "bridge")
    assert made.returncode == 0, made.stderr
    try:
        inside = subprocess.run(["ip", "-n", h.netns, "link", "show", "rnrtest0"], capture_output=True, check=False)
        assert inside.returncode == 0
        outside = subprocess.run(["ip", "link", "show", "rnrtest0"], capture_output=True, check=False)
        assert outside.returncode != 0  # not on this machine
    finally:
        ssh(bed, h.address, "ip", "link", "delete", "rnrtest0")


def test_image_cache_written_over_ssh_stays_in_the_hosts_private_dir(mixed_bed):
    bed, h = mixed_bed, mixed_bed.host("tb1")
    name = f"probe-{uuid.uuid4().hex}"
    wrote = ssh(bed, h.address, f"echo cached > /var/cache/runner/{name}")
    assert wrote.returncode == 0, wrote.stderr
    assert (bed.private_dir(h, "/var/cache/runner") / name).read_text() == "cached\n"
    assert not (Path("/var/cache/runner") / name).exists()  # not in this machine's cache
    other = ssh(bed, bed.host("tb2").address, "test", "-e", f"/var/cache/runner/{name}")
    assert other.returncode == 1  # nor in the plain host's (which is this machine's)
    with pytest.raises(UsageError):
        bed.private_dir("tb2", "/var/cache/runner")


def test_inventory_and_state_mark_hypervisor_hosts(mixed_bed):
    bed = mixed_bed
    assert [h.hypervisor for h in bed.hosts] == [True, False]
    children = yaml.safe_load(bed.inventory_path.read_text())["all"]["children"]
    assert list(children["hypervisors"]["hosts"]) == ["tb1"]
    testbed_hosts = children["testbed"]["hosts"]
    assert testbed_hosts["tb1"]["runner_hypervisor"] is True
    assert testbed_hosts["tb2"]["runner_hypervisor"] is False
    inventory = load_inventory(bed.inventory_path)
    assert inventory.groups["hypervisors"] == ("tb1",)
    assert inventory.groups["testbed"] == ("tb1", "tb2")
    assert json.loads((bed.dir / STATE_FILE).read_text())["version"] == STATE_VERSION
    assert TestBed.load(bed.dir).hosts == bed.hosts


def test_sshd_restart_on_hypervisor_host_keeps_or_restarts_libvirtd(make_hypervisor_bed):
    bed = make_hypervisor_bed()
    h = bed.hosts[0]
    libvirtd = remote_libvirtd_pid(bed, "tb1")
    bed.kill_sshd("tb1")
    assert netns_procs(h.netns).get(libvirtd) == "libvirtd"  # only sshd was killed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((h.address, h.port), timeout=2).close()
    # Restart: sshd joins the running libvirtd's mount namespace (same /run, same private dirs).
    restarted = bed.start_sshd("tb1")
    assert restarted.sshd_pid not in (None, h.sshd_pid)
    assert remote_libvirtd_pid(bed, "tb1") == libvirtd
    assert ssh(bed, h.address, *VIRSH, "list", "--all").returncode == 0
    # With libvirtd gone as well, a restart runs the whole script: fresh /run, new virtlogd and libvirtd.
    bed.kill_sshd("tb1")
    for pid, comm in netns_procs(h.netns).items():
        if comm in ("libvirtd", "virtlogd"):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not netns_procs(h.netns), 5)
    assert netns_procs(h.netns) == {}
    bed.start_sshd("tb1")
    fresh = remote_libvirtd_pid(bed, "tb1")
    assert fresh != libvirtd and netns_procs(h.netns).get(fresh) == "libvirtd"
    assert {"virtlogd", "sshd"} <= set(netns_procs(h.netns).values())
    assert ssh(bed, h.address, *VIRSH, "list", "--all").returncode == 0


def test_down_of_hypervisor_hosts_leaves_no_libvirtd(make_hypervisor_bed, tmp_path):
    bed = make_hypervisor_bed()
    assert ssh(bed, bed.hosts[0].address, *VIRSH, "list", "--all").returncode == 0
    procs = netns_procs(bed.hosts[0].netns)
    daemons = [p for p, c in procs.items() if c in ("libvirtd", "virtlogd")]
    assert {"libvirtd", "virtlogd"} <= set(procs.values())
    bed.down()
    assert not any(alive(p) for p in daemons)
    assert leftovers(bed.bridge, bed.dir) == []
    # The same through the CLI, whose test bed is detached (its daemons are not our children).
    directory = tmp_path / "clihv"
    cli = [sys.executable, "-m", "runner.testing.testbed"]
    up = subprocess.run([*cli, "up", "1", "--hypervisors", "1", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=60, check=False)
    try:
        assert up.returncode == 0, up.stderr
        detached = TestBed.load(directory)
        assert detached.hosts[0].hypervisor
        assert ssh(detached, detached.hosts[0].address, *VIRSH, "list", "--all").returncode == 0
        procs = netns_procs(detached.hosts[0].netns)
        daemons = [p for p, c in procs.items() if c in ("libvirtd", "virtlogd")]
        assert {"libvirtd", "virtlogd"} <= set(procs.values())
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(directory)], capture_output=True, text=True, timeout=60,
                              check=False)
    assert down.returncode == 0, down.stderr
    assert not any(alive(p) for p in daemons)
    assert leftovers(detached.bridge, directory) == []
