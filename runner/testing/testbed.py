"""A test bed of real SSH hosts on this machine: Linux network namespaces on a private bridge.

Each test host is a network namespace with its own address on a private /24 (10.213.<id>.0/24, never
routed anywhere: the namespaces get no default route) and its own real `sshd` (own config, host key,
pid file, log). The bridge `rtb<id>` holds .1, hosts tb1..tbN hold .2, .3, ... A client key pair, an
Ansible inventory (group `testbed`) and a known_hosts file with the real host keys are written to the
test bed's directory, so the runner and Ansible reach the hosts exactly like lab machines.

Only the network is separate: the hosts share this machine's filesystem, hostname and kernel, with one
exception: root's shell start-up files. Every sshd runs in a mount namespace of its own (`ip netns exec NS
unshare --mount --propagation private sh tbI/host.sh SSHD ...`) where the bed's plain `login/.bashrc` (and
`.profile`, ...) are bind-mounted over this machine's /root/.bashrc (...), so a command over SSH starts
a plain shell as on a lab host, not this machine's development set-up (pyenv init took 0.2-0.5 s per
command here, and its rehash lock could make every SSH session wait 60 s). The rest of /root is shared.

Hypervisor hosts (`TestBed.up(n, ..., hypervisors=k)`: the first k hosts) run libvirt guests like a lab
host: their sshd runs in a private mount namespace (`ip netns exec NS unshare --mount --propagation
private sh tbI/hypervisor.sh SSHD ...`) where the script mounts a tmpfs on /run (sockets and pid files of
sshd, virtlogd and libvirtd), bind-mounts private directories tbI/root/<path> on /etc/libvirt (a copy of
this machine's, made when the host is created, without its domain definitions), /var/lib/libvirt,
/var/log/libvirt, /var/cache/runner (the runner's guest image cache) and /var/lib/containers (podman's
images and containers: the host imports what the runner ships it), then starts `virtlogd -d` and
`libvirtd -d` and execs the sshd. So `virsh -c qemu:///system` over SSH reaches that host's own libvirtd
(never this machine's), and bridges, taps and guests it makes live in the host's network namespace.
Still shared with this machine: the rest of the filesystem (binaries, /boot, /tmp, /dev, /var/cache/libvirt
with QEMU's capabilities cache, which is keyed by the QEMU binary), /sys (cgroups), the kernel, the pid
space and the hostname. Every process of a host, libvirtd's QEMUs included, is in its network namespace
and dies with `down()`. `kill_sshd` kills only sshd; a later `start_sshd` enters the mount namespace of
the host's running libvirtd (`nsenter --target PID --mount --net`) and starts only sshd; if that libvirtd
is gone, it runs the whole script again (fresh /run, new virtlogd and libvirtd; the private directories
keep their contents). In the inventory such hosts are also in group `hypervisors` and have
`runner_hypervisor: true` (false on the other hosts).

Names: everything the test bed creates starts with `rtb<id>` (id = the third octet, 1..254): bridge
`rtb<id>`, namespaces `rtb<id>h<i>`, host-side veths `rtb<id>v<i>`. The bridge's alias records who owns
it, so `cleanup_stale()` can remove what a crashed run left behind without touching a live test bed.

Usage (needs root and `ip netns`):

    with TestBed.up(3, base_dir=tmp, name="tb") as bed:
        bed.inventory_path, bed.hosts[0].address, bed.link_down("tb2"), ...

    python -m runner.testing.testbed up 3 --dir DIR [--hypervisors 1]   # prints DIR/hosts.yml; state in DIR/testbed.json
    python -m runner.testing.testbed down --dir DIR
    python -m runner.testing.testbed cleanup [--force]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil
import yaml

from runner.errors import ProvisionError, RunnerError, UsageError
from runner.hosts import process
from runner.util import alive, answers_ssh, wait_until

PREFIX = "rtb"
SUBNET_BASE = "10.213"  # 10.213.<id>.0/24, one /24 per test bed, only on this machine
SSHD = "/usr/sbin/sshd"
STATE_FILE = "testbed.json"
STATE_VERSION = 2  # 1: first version; 2: hosts have `hypervisor`
ALIAS_TAG = "runner-testbed"
MAX_HOSTS = 200
# Directories a hypervisor host has to itself: bind-mounted from <bed>/<host>/root/<path> inside its mount namespace.
HYPERVISOR_PRIVATE = ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/runner", "/var/lib/containers")
HYPERVISOR_SCRIPT = "hypervisor.sh"
HOST_SCRIPT = "host.sh"  # the start script of a host that is not a hypervisor: its plain login, then sshd
LOGIN_DIR = "login"  # <bed>/login/: the plain shell start-up files every host's root gets (see the module doc)
# root's start-up files that a non-interactive SSH command (bash -c, which reads .bashrc when run by sshd) or a
# login shell would read; those that exist on this machine are covered by the bed's plain ones.
LOGIN_FILES = (".bashrc", ".profile", ".bash_profile", ".bash_login")
ROOT_HOME = Path("~root").expanduser()  # the hosts' sshds log in as root
PLAIN_BASHRC = (
    "# A test-bed host's root: a plain shell, as on a lab host (runner/testing/testbed.py bind-mounts this file\n"
    "# over root's start-up file in the host's own mount namespace; this machine's own is not read there).\n"
)
HYPERVISOR_LOG = "hypervisor.log"  # the script's output; libvirtd logs to its private /var/log/libvirt


@dataclass(frozen=True)
class TestHost:
    """One host of the test bed. `sshd_pid` is None while its sshd is killed."""

    __test__ = False  # not a pytest test class

    name: str
    address: str
    port: int
    netns: str
    veth: str
    sshd_pid: int | None
    hypervisor: bool = False  # runs its own libvirtd in a private mount namespace (see the module doc)


class TestBed:
    """N namespaced hosts with real sshds. Build with `TestBed.up(...)`; always call `down()`."""

    __test__ = False

    def __init__(self, bed_id: int, name: str, directory: Path, hosts: list[TestHost], detached: bool) -> None:
        self.id = bed_id
        self.name = name
        self.dir = directory
        self.hosts = hosts
        self.detached = detached
        self._procs: dict[str, subprocess.Popen] = {}

    # ----- paths -------------------------------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.id}"

    @property
    def inventory_path(self) -> Path:
        return self.dir / "hosts.yml"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def key_path(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.dir / "authorized_keys"

    def private_dir(self, host: TestHost | str, path: str) -> Path:
        """Where a hypervisor host's private directory `path` (one of HYPERVISOR_PRIVATE) is on this machine."""
        h = self.host(host)
        if not h.hypervisor or path.rstrip("/") not in HYPERVISOR_PRIVATE:
            raise UsageError(f"{h.name}: {path} is not private to the host; private on hypervisor hosts: "
                             f"{', '.join(HYPERVISOR_PRIVATE)}")
        return self.dir / h.name / "root" / path.strip("/")

    def host(self, host: TestHost | str) -> TestHost:
        """The current record of a host given by name or record."""
        name = host if isinstance(host, str) else host.name
        for h in self.hosts:
            if h.name == name:
                return h
        raise UsageError(f"no test host '{name}'; known: {', '.join(h.name for h in self.hosts)}")

    # ----- life cycle --------------------------------------------------------------------------------
    @classmethod
    def up(
        cls, n: int, base_dir: Path, name: str = "testbed", *, detach: bool = False, hypervisors: int = 0
    ) -> TestBed:
        """Create n hosts; files go to base_dir/name (created; must not exist or be empty).

        The first `hypervisors` hosts are hypervisor hosts with their own libvirtd (see the module doc).
        detach=True lets the sshds (and libvirtds) outlive this process (the CLI); otherwise the sshds
        are our children. On any failure everything created so far is removed before the error propagates.
        """
        if not 1 <= n <= MAX_HOSTS:
            raise UsageError(f"test bed size {n} out of range; allowed: 1..{MAX_HOSTS}")
        if not 0 <= hypervisors <= n:
            raise UsageError(f"{hypervisors} hypervisor hosts out of range; allowed: 0..{n}")
        _check_tools(hypervisors > 0)
        directory = Path(base_dir).resolve() / name
        if any(c.isspace() for c in str(directory)):  # sshd_config and ssh -o split paths at whitespace
            raise UsageError(f"test bed directory {str(directory)!r} contains whitespace; choose another")
        if directory.exists() and any(directory.iterdir()):
            raise UsageError(f"test bed directory {directory} exists and is not empty")
        directory.mkdir(parents=True, exist_ok=True)
        bed_id = _claim_bridge(directory, detach)
        bed = cls(bed_id, name, directory, [], detach)
        try:
            bed._build(n, hypervisors)
        except BaseException:
            bed.down()
            raise
        return bed

    @classmethod
    def load(cls, directory: Path) -> TestBed:
        """The test bed whose state is in directory/testbed.json (e.g. made by another process)."""
        path = Path(directory).resolve() / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: cannot read test bed state: {e}") from None
        if state.get("version") != STATE_VERSION:
            raise UsageError(f"{path}: state version {state.get('version')!r} unsupported; allowed: {STATE_VERSION}")
        hosts = [TestHost(**h) for h in state["hosts"]]
        return cls(state["id"], state["name"], Path(state["dir"]), hosts, state["detached"])

    def __enter__(self) -> TestBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _build(self, n: int, hypervisors: int) -> None:
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.bridge}-client", "-f", str(self.key_path)])
        shutil.copyfile(self.key_path.with_suffix(".pub"), self.authorized_keys)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        login = self.dir / LOGIN_DIR
        login.mkdir()
        for name in LOGIN_FILES:
            (login / name).write_text(PLAIN_BASHRC)
        _ip("addr", "add", f"{self._address(1)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "type", "bridge", "forward_delay", "0")
        _ip("link", "set", self.bridge, "up")
        for i in range(1, n + 1):
            b = self.bridge
            host = TestHost(f"tb{i}", self._address(i + 1), 22, f"{b}h{i}", f"{b}v{i}", None, i <= hypervisors)
            self.hosts.append(host)  # recorded before it exists, so down() removes a half-made host
            self._save()
            self._create_host(host, peer=f"{b}p{i}")
        for h in list(self.hosts):
            self.start_sshd(h)
        self.known_hosts.write_text("".join(f"{h.address} {self._host_pubkey(h)}\n" for h in self.hosts))
        self.inventory_path.write_text(yaml.safe_dump(self._inventory(), sort_keys=False))
        self._save()

    def _address(self, index: int) -> str:
        return f"{SUBNET_BASE}.{self.id}.{index}"

    def _host_pubkey(self, h: TestHost) -> str:
        """'ssh-ed25519 AAAA...' of the host's sshd."""
        return " ".join((self.dir / h.name / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    def _create_host(self, host: TestHost, peer: str) -> None:
        netns, veth = host.netns, host.veth
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", netns)
        _ip("-n", netns, "link", "set", peer, "name", "eth0")
        _ip("-n", netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        hdir = self.dir / host.name
        hdir.mkdir()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(hdir / "ssh_host_ed25519_key")])
        (hdir / "sshd_config").write_text(
            f"ListenAddress {host.address}\n"
            f"Port {host.port}\n"
            f"HostKey {hdir / 'ssh_host_ed25519_key'}\n"
            f"PidFile {hdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "MaxSessions 64\n"
            "MaxStartups 64:30:128\n"
            "Subsystem sftp internal-sftp\n"
        )
        if host.hypervisor:
            self._prepare_hypervisor(host)
        else:
            (hdir / HOST_SCRIPT).write_text(
                f"#!/bin/sh\n"
                f"# Host {host.name} of test bed {self.bridge}, written by runner/testing/testbed.py. Run as\n"
                f"# `ip netns exec {host.netns} unshare --mount --propagation private sh THIS SSHD ARGS...`.\n"
                f"set -eu\n"
                f"{self._login_mounts()}"
                f'exec "$@"\n'
            )

    def _login_mounts(self) -> str:
        """Shell lines that put the bed's plain start-up files over root's, in the current mount namespace."""
        login = self.dir / LOGIN_DIR
        return "".join(
            f"if [ -e {ROOT_HOME / name} ]; then mount --bind {login / name} {ROOT_HOME / name}; fi\n" for name in LOGIN_FILES
        )

    def _prepare_hypervisor(self, host: TestHost) -> None:
        """The private directories and the start script of a hypervisor host."""
        hdir = self.dir / host.name
        mounts = []
        for path in HYPERVISOR_PRIVATE:
            private = hdir / "root" / path.strip("/")
            if path == "/etc/libvirt" and Path(path).is_dir():
                # This machine's libvirt configuration, without its domains (defined and autostarted).
                shutil.copytree(path, private, symlinks=True, ignore=_not_domains)
            else:
                private.mkdir(parents=True)
            mounts.append(f"mkdir -p {path} && mount --bind {private} {path}\n")
        (hdir / HYPERVISOR_SCRIPT).write_text(
            f"#!/bin/sh\n"
            f"# Hypervisor host {host.name} of test bed {self.bridge}, written by runner/testing/testbed.py. Run as\n"
            f"# `ip netns exec {host.netns} unshare --mount --propagation private sh THIS SSHD ARGS...`:\n"
            f"# the mounts below exist only in that new mount namespace and vanish with its last process.\n"
            f"set -eu\n"
            f"mount -t tmpfs -o mode=0755,nosuid,nodev {PREFIX}-run /run\n"
            f"mkdir -p -m 0755 /run/sshd /run/libvirt\n"
            f"mkdir -p -m 1777 /run/lock\n"
            f"# `ip netns exec` mounted a fresh /sys without the cgroup hierarchies; podman/runc need them:\n"
            f"# the machine's, mounted again (the same hierarchies, so limits apply as on the machine).\n"
            f"{_cgroup_mounts()}"
            f"{''.join(mounts)}"
            f"{self._login_mounts()}"
            f"{shutil.which('virtlogd')} -d </dev/null\n"
            f"{shutil.which('libvirtd')} -d </dev/null\n"
            f'exec "$@"\n'
        )

    def _inventory(self) -> dict:
        common = f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        hosts = {
            h.name: {
                "ansible_host": h.address,
                "ansible_port": h.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key_path),
                "ansible_ssh_common_args": common,
                "ansible_python_interpreter": "/usr/bin/python3",
                "runner_hypervisor": h.hypervisor,
            }
            for h in self.hosts
        }
        children: dict = {"testbed": {"hosts": hosts}}
        hypervisors = [h.name for h in self.hosts if h.hypervisor]
        if hypervisors:
            children["hypervisors"] = {"hosts": dict.fromkeys(hypervisors)}
        return {"all": {"children": children}}

    def _save(self) -> None:
        state = {
            "version": STATE_VERSION,
            "id": self.id,
            "name": self.name,
            "dir": str(self.dir),
            "detached": self.detached,
            "hosts": [asdict(h) for h in self.hosts],
        }
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.dir / STATE_FILE)

    def _replace(self, host: TestHost) -> None:
        self.hosts = [host if h.name == host.name else h for h in self.hosts]
        self._save()

    def down(self) -> None:
        """Kill the sshds (and anything else in the namespaces), delete namespaces, links and the directory.

        Tolerates things already gone; safe to call twice.
        """
        for h in self.hosts:
            self._stop_namespace(h)
            _forget_holds(h.netns)
            _ip_quiet("netns", "delete", h.netns)
            _ip_quiet("link", "delete", h.veth)
        _ip_quiet("link", "delete", self.bridge)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_namespace(self, h: TestHost) -> None:
        # Workloads and sessions first, so the living sshd reaps them; then the listener.
        pids = _netns_pids(h.netns)
        listener = h.sshd_pid if h.sshd_pid in pids else None  # a recorded pid may be reused by now
        # SIGTERM first: a shell still starting (an SSH session's, e.g. a runner's standby session) runs its
        # EXIT traps, so it leaves no lock behind in the shared file system (the hosts' shells no longer read
        # this machine's start-up files, whose pyenv rehash lock once made every later SSH session wait 60 s).
        _kill_and_wait([p for p in pids if p != listener], signal.SIGTERM, wait_s=0.5)
        _kill_and_wait([p for p in _netns_pids(h.netns) if p != listener], signal.SIGKILL)
        if listener is not None:
            self._stop_sshd_pid(h.name, listener)
        _kill_and_wait(_netns_pids(h.netns), signal.SIGKILL)
        self._reap(h.name)

    def _stop_sshd_pid(self, name: str, pid: int) -> None:
        _kill_and_wait([pid], signal.SIGKILL)
        self._reap(name)

    def _reap(self, name: str) -> None:
        """Collect our own sshd child of that host, if any (killing it if it still runs)."""
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.kill()
            proc.wait()

    # ----- faults ------------------------------------------------------------------------------------
    def link_down(self, host: TestHost | str) -> None:
        """Cut the host off the bridge: packets are dropped silently, like a pulled cable."""
        _ip("link", "set", self.host(host).veth, "down")

    def link_up(self, host: TestHost | str) -> None:
        _ip("link", "set", self.host(host).veth, "up")

    def kill_sshd(self, host: TestHost | str) -> None:
        """SIGKILL the host's sshd and its open sessions: new and existing connections fail."""
        h = self.host(host)
        sshds = [p for p in _netns_pids(h.netns) if _comm(p) == "sshd"]
        _kill_and_wait([p for p in sshds if p != h.sshd_pid], signal.SIGKILL)
        if h.sshd_pid in sshds:
            self._stop_sshd_pid(h.name, h.sshd_pid)
        self._replace(replace(h, sshd_pid=None))

    def start_sshd(self, host: TestHost | str) -> TestHost:
        """Start the host's sshd (again) and wait until it accepts connections; returns the new record.

        On a hypervisor host the first start runs its script (private /run and mounts, virtlogd, libvirtd,
        then sshd); a restart enters the mount namespace of its running libvirtd and starts only sshd, or
        runs the whole script again if that libvirtd is gone.
        """
        h = self.host(host)
        if h.sshd_pid is not None and h.sshd_pid in _netns_pids(h.netns):
            return h
        self._reap(h.name)
        hdir = self.dir / h.name
        pidfile = hdir / "sshd.pid"
        pidfile.unlink(missing_ok=True)
        sshd = [SSHD, "-f", str(hdir / "sshd_config"), "-E", str(hdir / "sshd.log")]
        logs = [hdir / "sshd.log"]
        if not h.hypervisor:
            cmd = ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--propagation", "private",
                   "sh", str(hdir / HOST_SCRIPT), *sshd]
        else:
            logs.append(hdir / HYPERVISOR_LOG)
            anchor = _libvirtd_of(h.netns)
            if anchor is not None:  # nsenter and unshare exec in place: the pid stays the sshd's
                cmd = ["nsenter", f"--target={anchor}", "--mount", "--net", *sshd]
            else:
                cmd = ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--propagation", "private",
                       "sh", str(hdir / HYPERVISOR_SCRIPT), *sshd]
        with open(logs[-1], "ab") as out:  # sshd itself logs to sshd.log (-E)
            if self.detached:  # sshd daemonizes after it listens; the pid file follows shortly
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60, check=False)
                if proc.returncode != 0:
                    raise ProvisionError(f"test bed: starting sshd of {h.name} failed (exit {proc.returncode}): "
                                         f"{_last_log_line(logs)}")
                pid = _wait_pidfile(pidfile, h.name)
            else:
                proc = subprocess.Popen(
                    [*cmd, "-D"], stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                )
                self._procs[h.name] = proc
                pid = proc.pid  # `ip netns exec` execs sshd (or unshare, sh, sshd) in place
        new = replace(h, sshd_pid=pid)
        self._replace(new)
        _wait_listening(new, self._procs.get(h.name), logs, wait_s=30.0 if h.hypervisor else 5.0)
        return new


# ----- stale test beds -------------------------------------------------------------------------------
def _cgroup_mounts() -> str:
    """Shell lines that mount this machine's cgroup hierarchies again under /sys/fs/cgroup (pure text)."""
    lines = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target, fstype, options = line.split()[:4]
        if not (target == "/sys/fs/cgroup" or target.startswith("/sys/fs/cgroup/")):
            continue
        if fstype in ("cgroup", "cgroup2", "tmpfs"):
            lines.append(f"mkdir -p {target} && mount -t {fstype} -o {options} {source} {target}\n")
    return "".join(lines)


def cleanup_stale(force: bool = False) -> list[str]:
    """Remove test-bed namespaces, links and their processes whose owner is gone; returns what was removed.

    A test bed is stale when the process that made it is dead (library use) or, for a detached test bed
    (CLI), when its directory no longer holds its state. force=True removes every `rtb*` test bed.
    """
    live: set[str] = set()
    for link in _links():
        name = link["ifname"]
        if _is_bridge_name(name) and not force and not _bridge_is_stale(link.get("ifalias", "")):
            live.add(name)
    removed: list[str] = []
    for ns in _netns_names():
        owner = _owner_bridge(ns)
        if owner is not None and owner not in live:
            _kill_and_wait(_netns_pids(ns), signal.SIGKILL)
            _ip_quiet("netns", "delete", ns)
            removed.append(ns)
    for link in sorted(_links(), key=lambda lk: _is_bridge_name(lk["ifname"])):  # veths before bridges
        name = link["ifname"]
        owner = _owner_bridge(name)
        if owner is not None and owner not in live:
            _ip_quiet("link", "delete", name)
            removed.append(name)
    return removed


def _bridge_is_stale(alias: str) -> bool:
    """Decide from the bridge alias '<tag> owner=<pid>@<start>|detached@0 dir=<path>'."""
    if not alias.startswith(ALIAS_TAG + " owner="):
        return False  # being created right now (the alias follows the link), or not ours to judge
    owner_field, _, directory = alias[len(ALIAS_TAG + " owner="):].partition(" dir=")
    owner, _, start = owner_field.partition("@")
    if owner == "detached":
        return not (Path(directory) / STATE_FILE).exists()
    return not (owner.isdigit() and start.lstrip("-").isdigit() and _start_time(int(owner)) == int(start))


def _owner_bridge(name: str) -> str | None:
    """'rtb12' for rtb12, rtb12h3, rtb12v3, rtb12p3; None for names that are not ours."""
    if not name.startswith(PREFIX):
        return None
    rest = name[len(PREFIX):]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if digits == 0 or not (rest[digits:] == "" or (rest[digits] in "hvp" and rest[digits + 1:].isdigit())):
        return None
    return PREFIX + rest[:digits]


def _is_bridge_name(name: str) -> bool:
    return _owner_bridge(name) == name


# ----- helpers ---------------------------------------------------------------------------------------
def _check_tools(hypervisors: bool = False) -> None:
    if os.geteuid() != 0:
        raise UsageError("the test bed needs root (network namespaces, bridge, sshd)")
    for tool in ("ip", "ssh-keygen", SSHD):
        if shutil.which(tool) is None:
            raise UsageError(f"the test bed needs {tool}; install iproute2 and openssh-server")
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            raise UsageError(f"the test bed needs {tool}; install util-linux and mount")
    for tool in ("libvirtd", "virtlogd", "nsenter") if hypervisors else ():
        if shutil.which(tool) is None:
            raise UsageError(f"hypervisor hosts need {tool}; install libvirt-daemon-system and util-linux")


def _not_domains(directory: str, names: list[str]) -> list[str]:
    """copytree filter for /etc/libvirt: leave out the domain definitions and their autostart links."""
    if Path(directory) != Path("/etc/libvirt/qemu"):
        return []
    return [n for n in names if n == "autostart" or n.endswith(".xml")]


def _libvirtd_of(netns: str) -> int | None:
    """A libvirtd running in the namespace in a mount namespace of its own (a hypervisor host's), if any."""
    try:
        ours = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return None
    for pid in _netns_pids(netns):
        try:
            if _comm(pid) == "libvirtd" and _alive(pid) and os.readlink(f"/proc/{pid}/ns/mnt") != ours:
                return pid
        except OSError:
            continue
    return None


def _last_log_line(logs: Sequence[Path]) -> str:
    """The last line of the most recently written of these logs."""
    written = [p for p in logs if p.exists() and p.stat().st_size > 0]
    if not written:
        return "no log output"
    return max(written, key=lambda p: p.stat().st_mtime_ns).read_text(errors="replace").strip().splitlines()[-1]


def _run(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    if proc.returncode != 0:
        first = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[0]
        raise ProvisionError(f"test bed: `{' '.join(argv)}` failed: {first}")
    return proc.stdout


def _ip(*args: str) -> str:
    return _run(["ip", *args])


def _forget_holds(netns: str) -> None:
    """Remove campaign holds (runner.lab.reservations) kept for this namespace. The kernel reuses a deleted
    namespace's inode, and holds are named after it: a hold left by a test must not outlive its test bed."""
    from runner.lab.holdfile import DEFAULT_DIR, hold_dir  # imported on teardown only: the bed needs no lab

    try:
        inode = os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return
    for folder in {DEFAULT_DIR, hold_dir()}:  # RUNNER_HOLD_DIR: the tests' own
        (Path(folder) / f"hold-net{inode}.json").unlink(missing_ok=True)


def _ip_quiet(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=30, check=False)


def _links() -> list[dict]:
    return json.loads(_ip("-j", "link", "show") or "[]")


def _netns_names() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _used_octets() -> set[int]:
    used = set()
    for entry in json.loads(_ip("-j", "-4", "addr", "show") or "[]"):
        for a in entry.get("addr_info", []):
            net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for octet in range(1, 255):
                if net.overlaps(ipaddress.ip_network(f"{SUBNET_BASE}.{octet}.0/24")):
                    used.add(octet)
    return used


def _claim_bridge(directory: Path, detach: bool) -> int:
    """Create bridge rtb<id> for a free id; creating the link is the atomic claim."""
    owner = "detached@0" if detach else f"{os.getpid()}@{_start_time(os.getpid())}"
    ours = {_owner_bridge(lk["ifname"]) for lk in _links()} - {None}
    used = _used_octets() | {int(b[len(PREFIX):]) for b in ours}
    candidates = [o for o in range(1, 255) if o not in used]
    random.shuffle(candidates)
    for octet in candidates:
        bridge = f"{PREFIX}{octet}"
        proc = subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], capture_output=True, text=True)
        if proc.returncode == 0:
            try:
                _ip("link", "set", bridge, "alias", f"{ALIAS_TAG} owner={owner} dir={directory}")
            except ProvisionError:
                _ip_quiet("link", "delete", bridge)
                raise
            return octet
    raise ProvisionError(f"test bed: no free subnet left in {SUBNET_BASE}.0.0/16")


def _netns_pids(netns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _comm(pid: int) -> str:
    """The process's name (its comm), or '' when there is no such process."""
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""


_alive = alive  # a zombie counts as dead: this machine's init does not reap orphans


def _start_time(pid: int) -> int:
    """The process's start in clock ticks after boot (runner.hosts.process, the one reader of it: psutil's
    create_time adds the boot time and moves with the clock, so it cannot name a process across calls); -1 for
    no such process."""
    found = process.identify(pid)
    return -1 if found is None or found.start is None else found.start


def _kill_and_wait(pids: Sequence[int], sig: signal.Signals, wait_s: float = 5.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    wait_until(lambda: not any(_alive(p) for p in pids), wait_s, interval=0.01)


def _wait_pidfile(pidfile: Path, name: str, wait_s: float = 5.0) -> int:
    def pid() -> int | None:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        return int(text) if text.isdigit() else None

    if (found := wait_until(pid, wait_s, interval=0.01)) is not None:
        return found
    raise ProvisionError(f"test bed: sshd of {name} wrote no pid file {pidfile} within {wait_s:g} s")


def _wait_listening(h: TestHost, proc: subprocess.Popen | None, logs: Sequence[Path], wait_s: float = 5.0) -> None:
    def listening() -> bool:
        if proc is not None and proc.poll() is not None:
            raise ProvisionError(f"test bed: sshd of {h.name} exited with {proc.returncode}: {_last_log_line(logs)}")
        return answers_ssh(lambda: socket.create_connection((h.address, h.port), timeout=0.5))

    if wait_until(listening, wait_s, interval=0.02):
        return
    raise ProvisionError(f"test bed: sshd of {h.name} does not listen on {h.address}:{h.port} after {wait_s:g} s")


# ----- CLI -------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """`up N --dir DIR` | `down --dir DIR` | `cleanup [--force]`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m runner.testing.testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="create N hosts; prints the inventory path")
    p_up.add_argument("n", type=int)
    p_up.add_argument("--dir", type=Path, required=True)
    p_up.add_argument("--hypervisors", type=int, default=0, metavar="K",
                      help="the first K hosts run their own libvirtd (hypervisor hosts)")
    p_down = sub.add_parser("down", help="remove the test bed whose state is in DIR")
    p_down.add_argument("--dir", type=Path, required=True)
    p_clean = sub.add_parser("cleanup", help="remove test beds left by crashed runs")
    p_clean.add_argument("--force", action="store_true", help="remove every rtb* test bed, live or not")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            d = args.dir.resolve()
            bed = TestBed.up(args.n, d.parent, d.name, detach=True, hypervisors=args.hypervisors)
            print(bed.inventory_path)
        elif args.cmd == "down":
            TestBed.load(args.dir).down()
        else:
            for name in cleanup_stale(force=args.force):
                print(f"removed {name}")
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
