"""Hypervisor hosts that are virtual machines: a KVM host for the test bed, one level down.

This machine's own /dev/kvm cannot run a guest (docs/guests.md), but QEMU's software emulation (TCG)
emulates an AMD CPU with SVM and nested paging: a VM started with `-cpu qemu64,+svm,+npt` loads `kvm_amd`,
gets a working /dev/kvm and runs `qemu-system-x86_64 -accel kvm` guests. Such a VM is a slow but real KVM
host: hardware-assisted (emulated) virtualisation, kvm-clock, steal time, paravirtual spinlocks.

A KVM host VM here is:
- **disk**: a Debian 12 root filesystem (`rootfs.build_rootfs` with KVM_HOST_PACKAGES: libvirt, QEMU,
  openssh-server, python3) plus this machine's kernel modules (`/lib/modules/<release>`, for kvm_amd,
  bridge, tun, vhost) and an init hook (`/etc/runner-init.d/50-kvm-host`) that loads them and starts
  virtlogd and libvirtd before sshd; built once and cached like every guest image (content-addressed,
  `~/.cache/runner/images/disks/<digest>/`), booted through a copy-on-write overlay in the test bed's
  directory, so the cached image is never written;
- **boot**: `qemu-system-x86_64 -accel tcg -cpu qemu64,+svm,+npt -smp CPUS -m MEMORY` with direct kernel
  boot of this machine's kernel and initrd (`root=/dev/vda rw init=/sbin/runner-init`), the console in a
  file (`<name>.console.log`);
- **network**: QEMU user networking with `restrict=on` (the VM reaches nothing outside), its sshd forwarded
  to a free port on 127.0.0.1. Its guests live on a bridge inside the VM; the runner reaches them through
  the VM's SSH connection, as on a lab host;
- **identity**: root logs in with the runner's controller key (`~/.cache/runner/keys/id_ed25519`); the VM's
  host key is the image's own, written to the test bed's known_hosts as `[127.0.0.1]:PORT KEY`.

Nested under TCG, everything is slow (figures in docs/guests.md say so); they say nothing about the speed
of real hardware.

From a shell (the VMs outlive the command; docs/study.md runs the study on them):

    python -m runner.testing.vmhost up --dir DIR [--kvm] [--xen]   # prints DIR/hosts.yml (group vmhosts)
    python -m runner.testing.vmhost down --dir DIR                  # powers them off, removes their overlays
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from runner.errors import ProvisionError, RunnerError
from runner.provision import image, rootfs
from runner.util import alive, answers_ssh, env_seconds, wait_until

KVM_HOST_PACKAGES = (
    "openssh-server", "openssh-sftp-server", "python3", "libvirt-daemon-system", "libvirt-clients",
    "qemu-system-x86", "qemu-utils", "iproute2", "procps", "kmod", "mount", "util-linux",
    "stress-ng",  # the stressng workload on the host itself (env host)
    "podman", "runc",  # env container (runner.provision.container: podman with runc)
)  # fmt: skip
KVM_HOST_INIT = """#!/bin/sh
# runner test bed: a KVM host VM's services (runner.testing.vmhost)
for m in kvm_amd kvm tun bridge vhost_net; do modprobe "$m" 2>/dev/null; done
[ -c /dev/kvm ] && chmod 0666 /dev/kvm  # no udev here to give group kvm access; QEMU runs as libvirt-qemu
mkdir -p /run/libvirt /run/lock /var/log/libvirt /var/lib/libvirt/images
# containers (podman with runc) need a cgroup hierarchy; no init system mounts one here
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
virtlogd -d
libvirtd -d
i=0; while [ ! -S /run/libvirt/libvirt-sock ] && [ "$i" -lt 100 ]; do sleep 0.2; i=$((i+1)); done
# libvirt probes QEMU's capabilities on first use: minutes on an emulated host, so before sshd, not in a
# runner command's time limit
virsh -c qemu:///system domcapabilities --virttype kvm >/dev/null 2>&1
virsh -c qemu:///system capabilities >/dev/null 2>&1
echo "runner-kvm-host: kvm $( [ -c /dev/kvm ] && echo yes || echo no ), libvirtd $( [ -S /run/libvirt/libvirt-sock ] && echo up || echo down )"
"""
XEN_VERSION = "4.17"
XEN_HOST_PACKAGES = (
    "openssh-server", "openssh-sftp-server", "python3", f"xen-hypervisor-{XEN_VERSION}-amd64",
    f"xen-utils-{XEN_VERSION}", "qemu-system-xen", "qemu-utils", "iproute2", "bridge-utils", "procps", "kmod",
    "mount", "util-linux", "busybox",
)  # fmt: skip
XEN_HOST_INIT = """#!/bin/sh
# runner test bed: a Xen host VM's dom0 services (runner.testing.vmhost)
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback xen-pciback bridge tun; do
  modprobe "$m" 2>/dev/null
done
mkdir -p /proc/xen /var/log/xen/console /var/lib/xen /run/xen /run/lock
grep -q xenfs /proc/mounts || mount -t xenfs xenfs /proc/xen
# guests' consoles to /var/log/xen/console/guest-NAME.log (the runner shows their tail when a guest fails)
grep -q '^XENCONSOLED_ARGS=.*--log=guest' /etc/default/xen ||
  echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >>/etc/default/xen
/etc/init.d/xen start >/var/log/xen/init.log 2>&1
caps=$(xl info 2>/dev/null | sed -n 's/^virt_caps *: *//p')
echo "runner-xen-host: xl $(xl info >/dev/null 2>&1 && echo up || echo down), virt_caps: ${caps:-none}"
"""
XEN_CMDLINE = "console=com1 com1=115200,8n1 dom0_mem={dom0}M,max:{dom0}M loglvl=info guest_loglvl=info noreboot"
CPU_MODEL = "qemu64,+svm,+npt"
GUEST_ADDRESS, GATEWAY = "10.0.2.15/24", "10.0.2.2"  # QEMU user networking's defaults
# An emulated host answers slowly, more so on a loaded machine (a channel took over 10 s to open with the
# 2 cores busy): the inventory gives its SSH connections this much time.
CONNECT_TIMEOUT_S = 120
BOOT_TIMEOUT_ENV, BOOT_TIMEOUT_DEFAULT_S = "RUNNER_VM_HOST_BOOT_TIMEOUT", 300.0
_procs: dict[int, subprocess.Popen] = {}  # the VMs this process started, by pid (kept until stop waits for them)


@dataclass(frozen=True)
class VMHost:
    """A running hypervisor host VM: SSH on 127.0.0.1:port as root with `key_path`, host key `host_key`."""

    name: str
    kind: str  # "kvm" or "xen"
    port: int
    pid: int
    key_path: Path
    host_key: str
    console: Path
    overlay: Path
    boot_s: float

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}\n"


def _host_disk(cache: Path, packages: tuple[str, ...], init_name: str, init_text: str,
               progress: rootfs.Progress | None) -> rootfs.DiskImage:
    """A hypervisor host VM's disk: Debian with `packages`, this machine's kernel modules and the init
    hook `init_text` (/etc/runner-init.d/50-<init_name>); built once per machine and cached."""
    key = image.campaign_keypair(cache / "keys")
    kernel = image.newest_kernel()
    release = kernel.name.removeprefix("vmlinuz-")
    initrd = kernel.parent / f"initrd.img-{release}"
    base = rootfs.build_rootfs(cache / "images", rootfs.Recipe(packages=packages), progress)
    init = cache / "payload" / f"{init_name}-init.sh"
    init.parent.mkdir(parents=True, exist_ok=True)
    if not init.exists() or init.read_text() != init_text:
        init.write_text(init_text)
    init.chmod(0o755)
    return rootfs.build_disk(cache / "images", base, key_path=key, kernel=kernel, initrd=initrd if initrd.is_file() else None,
                             extra_files={f"/etc/runner-init.d/50-{init_name}": init},
                             extra_trees={f"/lib/modules/{release}": Path("/lib/modules") / release}, progress=progress)


def kvm_host_disk(cache: Path, progress: rootfs.Progress | None = None) -> rootfs.DiskImage:
    """The KVM host VM's disk (built once per machine and cached)."""
    return _host_disk(cache, KVM_HOST_PACKAGES, "kvm-host", KVM_HOST_INIT, progress)


def xen_host_disk(cache: Path, progress: rootfs.Progress | None = None) -> tuple[rootfs.DiskImage, Path]:
    """The Xen host VM's dom0 disk and the Xen hypervisor image (the 32-bit multiboot ELF QEMU loads with
    -kernel), taken from the same root filesystem's xen-hypervisor package; both built once and cached."""
    disk = _host_disk(cache, XEN_HOST_PACKAGES, "xen-host", XEN_HOST_INIT, progress)
    base = disk.rootfs
    assert base is not None
    xen = base.tar.parent / f"xen-{XEN_VERSION}"
    if not xen.exists():
        member = f"./boot/xen-{XEN_VERSION}-amd64.gz"
        tmp = xen.with_name(f"{xen.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as out:
            tar = subprocess.Popen(["tar", "-xOf", str(base.tar), member], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            unzipped = subprocess.run(["gunzip", "-c"], stdin=tar.stdout, stdout=out, stderr=subprocess.PIPE, check=False)
            tar.stdout.close()  # type: ignore[union-attr]
            tar_err = tar.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
            tar.stderr.close()  # type: ignore[union-attr]  # (left open, it was an unraisable ResourceWarning)
            if tar.wait() or unzipped.returncode:
                tmp.unlink(missing_ok=True)
                why = tar_err or unzipped.stderr.decode(errors="replace").strip()
                raise ProvisionError(f"cannot take {member} from root filesystem {base.digest}: {why}")
        tmp.rename(xen)
    return disk, xen


def qemu_argv(disk: rootfs.DiskImage, overlay: Path, console: Path, port: int, *, cpus: int, memory_mib: int,
              xen: Path | None = None, dom0_mib: int = 1024) -> list[str]:
    """The QEMU command line of a hypervisor host VM (pure). KVM host: direct kernel boot of the disk's
    kernel. Xen host (`xen` given): QEMU's multiboot loader boots Xen (`-kernel xen -append XEN_CMDLINE`),
    and the `-initrd` list holds Xen's modules, comma-separated: dom0's kernel with its command line, then
    dom0's initrd. Either way the host's console (Xen's com1, which also carries dom0's hvc0) goes to
    `console`."""
    linux = f"panic=-1 quiet {rootfs.ROOT_CMDLINE} runner.ip={GUEST_ADDRESS} runner.gw={GATEWAY}"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", CPU_MODEL, "-smp", str(cpus), "-m", str(memory_mib)]
    if xen is None:
        argv += ["-kernel", str(disk.kernel), "-append", f"console=ttyS0 {linux}"]
        if disk.initrd is not None:
            argv += ["-initrd", str(disk.initrd)]
    else:
        if "," in f"{disk.kernel}{disk.initrd}{linux}":
            raise ProvisionError("a Xen host's dom0 kernel, initrd and command line cannot contain a comma (QEMU's module list)")
        modules = [f"{disk.kernel} console=hvc0 earlyprintk=xen {linux}"] + ([str(disk.initrd)] if disk.initrd else [])
        argv += ["-kernel", str(xen), "-append", XEN_CMDLINE.format(dom0=dom0_mib), "-initrd", ",".join(modules)]
    argv += ["-drive", f"file={overlay},format=qcow2,if=virtio",
             "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
             "-display", "none", "-serial", f"file:{console}", "-no-reboot"]
    return argv


def start_kvm_host(directory: Path, cache: Path, name: str = "kvm1", *, cpus: int = 2, memory_mib: int = 3072,
                   progress: rootfs.Progress | None = None) -> VMHost:
    """Build (once) and boot a KVM host VM; returns when its sshd answers. The VM is a child of this process
    in its own session; stop it with `stop`."""
    return _start(directory, name, "kvm", kvm_host_disk(cache, progress), None, cpus=cpus, memory_mib=memory_mib)


def start_xen_host(directory: Path, cache: Path, name: str = "xen1", *, cpus: int = 2, memory_mib: int = 3072,
                   dom0_mib: int = 1024, progress: rootfs.Progress | None = None) -> VMHost:
    """Build (once) and boot a Xen host VM (Xen, a Debian dom0 with the Xen tools and qemu-system-xen);
    returns when dom0's sshd answers. Guests get `memory_mib - dom0_mib` less Xen's own share."""
    disk, xen = xen_host_disk(cache, progress)
    return _start(directory, name, "xen", disk, xen, cpus=cpus, memory_mib=memory_mib, dom0_mib=dom0_mib)


def _start(directory: Path, name: str, kind: str, disk: rootfs.DiskImage, xen: Path | None, *, cpus: int,
           memory_mib: int, dom0_mib: int = 1024) -> VMHost:
    directory.mkdir(parents=True, exist_ok=True)
    overlay, console = directory / f"{name}.qcow2", directory / f"{name}.console.log"
    overlay.unlink(missing_ok=True)
    made = subprocess.run(rootfs.overlay_argv(str(disk.disk), str(overlay)), capture_output=True, text=True, check=False)
    if made.returncode:
        raise ProvisionError(f"{name}: cannot create the VM's disk overlay: {made.stderr.strip()}")
    port = _free_port()
    t0 = time.monotonic()
    with (directory / f"{name}.qemu.log").open("wb") as log:
        proc = subprocess.Popen(qemu_argv(disk, overlay, console, port, cpus=cpus, memory_mib=memory_mib, xen=xen, dom0_mib=dom0_mib),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    _procs[proc.pid] = proc
    vm = VMHost(name, kind, port, proc.pid, disk.key_path, disk.host_key, console, overlay, 0.0)
    try:
        _wait_ready(vm, proc, t0)
    except BaseException:
        stop(vm)
        raise
    return VMHost(name, kind, port, proc.pid, disk.key_path, disk.host_key, console, overlay, time.monotonic() - t0)


def stop(vm: VMHost) -> None:
    """Power the VM off (SIGTERM to QEMU, then SIGKILL) and remove its overlay."""
    proc = _procs.pop(vm.pid, None)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(vm.pid, sig)
        except ProcessLookupError:
            break
        if _gone(vm.pid, proc, wait):
            break
    vm.overlay.unlink(missing_ok=True)


def _gone(pid: int, proc: subprocess.Popen | None, wait: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout=wait)
            return True
        except subprocess.TimeoutExpired:
            return False
    return bool(wait_until(lambda: not alive(pid), wait))  # started by another process: a zombie has ended too


# What each kind of VM host runs (inventory runner_envs, runner.execution.placement): the KVM host runs the bare
# host (stress-ng is installed), containers (podman) and libvirt guests; the Xen host's dom0 runs Xen guests only (its own kernel is a
# Xen guest, not a bare host).
ENVS = {"kvm": ["host", "container", "kvm", "qemu"], "xen": ["xen-pv", "xen-pvh", "xen-hvm"]}
# Seconds for estimates (runner_boot_s: one guest from start to SSH-ready, per environment; runner_trial_s: what a
# trial costs beyond its workload), measured on these VMs nested under TCG on a 2-core machine that was also
# compiling two kernels (docs/study.md, "What was run here": kvm and xen-pv; xen-pvh and xen-hvm from
# docs/guests.md): the built-in figures (guests booted under TCG directly) are far too low for them.
BOOT_S = {"kvm": {"kvm": 60.0, "qemu": 60.0}, "xen": {"xen-pv": 100.0, "xen-pvh": 120.0, "xen-hvm": 480.0}}
TRIAL_S = {"kvm": 50.0, "xen": 150.0}


def write_inventory(vms: list[VMHost], directory: Path) -> Path:
    """An Ansible inventory of the VM hosts (groups `vmhosts` and `hypervisors`) and its known_hosts file
    beside it; returns the inventory's path. Each host says what it runs (runner_envs) and how long its
    guests take to boot and its trials cost (runner_boot_s, runner_trial_s, for estimates)."""
    known = directory / "known_hosts"
    known.write_text("".join(vm.known_hosts_line for vm in vms))
    common = f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    hosts = {vm.name: {"ansible_host": "127.0.0.1", "ansible_port": vm.port, "ansible_user": "root",
                       "ansible_ssh_private_key_file": str(vm.key_path), "ansible_ssh_common_args": common,
                       "ansible_python_interpreter": "/usr/bin/python3", "runner_hypervisor": True,
                       "ansible_timeout": CONNECT_TIMEOUT_S,
                       "runner_vm_host": vm.kind, "runner_envs": ENVS[vm.kind], "runner_boot_s": BOOT_S[vm.kind],
                       "runner_trial_s": TRIAL_S[vm.kind]}
             for vm in vms}
    doc = {"all": {"children": {"vmhosts": {"hosts": hosts}, "hypervisors": {"hosts": dict.fromkeys(hosts)}}}}
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def console_tail(vm: VMHost, lines: int = 5) -> str:
    try:
        text = vm.console.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def _wait_ready(vm: VMHost, proc: subprocess.Popen, t0: float) -> None:
    boot_timeout = env_seconds(BOOT_TIMEOUT_ENV, BOOT_TIMEOUT_DEFAULT_S)

    def ready() -> bool:
        if proc.poll() is not None:
            log = vm.console.with_name(f"{vm.name}.qemu.log")
            err = (log.read_text(errors="replace").strip() if log.exists() else "")[-300:]
            raise ProvisionError(f"{vm.name}: QEMU exited with status {proc.returncode}: {err or console_tail(vm)}")
        return image.SSH_MARKER in (vm.console.read_text(errors="replace") if vm.console.exists() else "") and \
            answers_ssh(lambda: socket.create_connection(("127.0.0.1", vm.port), timeout=5), read_timeout=20)

    if wait_until(ready, boot_timeout - (time.monotonic() - t0), interval=1.0):
        return
    raise ProvisionError(f"{vm.name}: no SSH {boot_timeout:.0f} s after QEMU started; console: {console_tail(vm)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- CLI -------------------------------------------------------------------------------------------
STATE = "vmhosts.json"


def save(vms: Sequence[VMHost], directory: Path) -> Path:
    """The running VMs, for `down` from another process."""
    path = directory / STATE
    path.write_text(json.dumps([{k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(vm).items()} for vm in vms],
                               indent=2))
    return path


def load(directory: Path) -> list[VMHost]:
    path = directory / STATE
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"{path}: no VM hosts recorded there ({exc})") from None
    paths = {f.name for f in dataclasses.fields(VMHost) if f.type in ("Path", Path)}
    return [VMHost(**{k: Path(v) if k in paths else v for k, v in row.items()}) for row in rows]


def up(directory: Path, kinds: Sequence[str], *, cpus: int = 2, memory_mib: int = 3072, xen_memory_mib: int = 3584,
       cache: Path | None = None) -> Path:
    """Boot the VM hosts of `kinds` ("kvm", "xen") at once, write their inventory and state; returns the
    inventory's path. A Xen host gets more memory: its dom0 keeps 1 GiB, and 4 guests of 512 MiB must fit."""
    from runner.execution.images import CONTROLLER_CACHE

    directory.mkdir(parents=True, exist_ok=True)
    cache = cache or CONTROLLER_CACHE

    def start(kind: str) -> VMHost:
        if kind == "kvm":
            return start_kvm_host(directory, cache, cpus=cpus, memory_mib=memory_mib)
        return start_xen_host(directory, cache, cpus=cpus, memory_mib=xen_memory_mib)

    with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
        futures = [pool.submit(start, k) for k in kinds]
    vms, errors = [], []
    for f in futures:
        try:
            vms.append(f.result())
        except RunnerError as exc:
            errors.append(str(exc))
    if errors:
        for vm in vms:
            stop(vm)
        raise ProvisionError("; ".join(errors))
    save(vms, directory)
    return write_inventory(vms, directory)


def down(directory: Path) -> list[str]:
    """Power off the VM hosts recorded in `directory`; returns their names."""
    vms = load(directory)
    for vm in vms:
        stop(vm)
    (directory / STATE).unlink(missing_ok=True)
    return [vm.name for vm in vms]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.testing.vmhost", description="KVM and Xen host VMs for the test bed")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="boot VM hosts; prints the inventory path (group vmhosts)")
    p_up.add_argument("--dir", type=Path, required=True)
    p_up.add_argument("--kvm", action="store_true", help="a KVM host VM (kvm1)")
    p_up.add_argument("--xen", action="store_true", help="a Xen host VM (xen1)")
    p_up.add_argument("--cpus", type=int, default=2, help="vCPUs of each VM host (default 2)")
    p_down = sub.add_parser("down", help="power off the VM hosts whose state is in DIR")
    p_down.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            kinds = [k for k in ("kvm", "xen") if getattr(args, k)] or ["kvm", "xen"]
            print(up(args.dir.resolve(), kinds, cpus=args.cpus))
        else:
            for name in down(args.dir.resolve()):
                print(f"stopped {name}")
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
