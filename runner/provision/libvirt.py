"""The only module that talks to libvirt (through the `virsh` CLI run on the hypervisor's Host).

Every function that acts takes the hypervisor `Host` first: this machine or a lab host over SSH. virsh runs
on that host against its own `qemu:///system` (rather than a `qemu+ssh://` URI from the controller): one SSH
connection per host serves virsh, the bridge, the image cache and the guests' jump channels alike, the
same host-key checking applies, and nothing needs libvirt on the controller.

Guests are transient domains (`virsh create`): destroying one leaves nothing defined behind. They boot
their kernel and initramfs directly, have no graphics, log their serial console to a file, and sit on a
host-only bridge (`BRIDGE`, `SUBNET`) this module creates; the runner gives each guest a static address
(`guest_address`) on the kernel command line. No traffic leaves that bridge: it has no uplink and no NAT.

QEMU runs as root for these domains (`<seclabel model='dac'>` +0:+0, no relabelling) so images, kernels
and logs may live in any directory the runner uses, e.g. a test's tmp_path, without libvirt chowning them.

`probe_accel` answers whether KVM really boots a guest on this host; the runner records the accelerator
actually used (spec.accel) with every result and never reports a TCG figure as a KVM one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shlex
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.errors import HostError, ProvisionError
from runner.hosts.base import Host
from runner.provision.guestspec import GuestSpec, belongs_to
from runner.provision.image import INIT_MARKER
from runner.provision.topology import format_cpulist
from runner.util import answers_ssh, wait_until

URI = "qemu:///system"
BRIDGE = "rnrbr0"
SUBNET = "10.214.0.0/24"  # host-only, used by this project on this machine only
LOG_DIR = "/var/log/runner/guests"  # on the hypervisor host: consoles and domain XML
LOCK = "/run/lock/runner-guests.lock"  # on the hypervisor host: serialises bridge changes with guest starts


@dataclass(frozen=True)
class RunningGuest:
    name: str
    console_log: str  # path on the hypervisor host
    started_at: float  # time.monotonic() when `virsh create` returned


def guest_address(index: int, subnet: str = SUBNET) -> str:
    """Static address of guest `index` ("10.214.0.10/24" for index 0); the host is the first address."""
    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())
    if index + 9 >= len(hosts):
        raise ProvisionError(f"guest index {index} does not fit in {subnet}")
    return f"{hosts[index + 9]}/{net.prefixlen}"


def host_address(subnet: str = SUBNET) -> str:
    """The host's address on the guest bridge ("10.214.0.1/24")."""
    net = ipaddress.ip_network(subnet)
    return f"{next(net.hosts())}/{net.prefixlen}"


def mac_address(name: str) -> str:
    """A stable locally administered MAC (QEMU's 52:54:00 prefix) derived from the guest name."""
    h = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])


def domain_xml(spec: GuestSpec, *, network: str | None, console_log: str) -> str:
    """The libvirt domain XML of `spec`: type 'kvm' (accel kvm) or 'qemu' (accel tcg), vCPU and emulator
    pinning, guest NUMA cells, direct kernel boot, virtio net on bridge `network` (None: no network),
    serial console to `console_log`, no graphics."""
    if spec.accel not in ("kvm", "tcg"):
        raise ProvisionError(f"guest {spec.name}: libvirt runs kvm guests with accel kvm or tcg, not {spec.env}/{spec.accel}")
    dom = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    ET.SubElement(dom, "name").text = spec.name
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(dom, "vcpu", placement="static").text = str(spec.vcpus)
    if spec.vcpu_pins or spec.emulator_pins:
        tune = ET.SubElement(dom, "cputune")
        for i, pins in enumerate(spec.vcpu_pins):
            ET.SubElement(tune, "vcpupin", vcpu=str(i), cpuset=format_cpulist(pins))
        if spec.emulator_pins:
            ET.SubElement(tune, "emulatorpin", cpuset=format_cpulist(spec.emulator_pins))
    if spec.numa_cells and spec.vcpu_pins:
        # Pinned guest: each virtual node's memory comes from the host node its vCPUs run on.
        numatune = ET.SubElement(dom, "numatune")
        for i, (_cpus, _mib, node) in enumerate(spec.numa_cells):
            ET.SubElement(numatune, "memnode", cellid=str(i), mode="strict", nodeset=str(node))
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = spec.kernel
    if spec.initrd:
        ET.SubElement(os_el, "initrd").text = spec.initrd
    ET.SubElement(os_el, "cmdline").text = spec.cmdline
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    # KVM: the host CPU as is (VBENCH's -cpu host); TCG: QEMU's default model.
    cpu = ET.SubElement(dom, "cpu", mode="host-passthrough") if spec.accel == "kvm" else ET.SubElement(dom, "cpu")
    if spec.numa_cells:
        numa = ET.SubElement(cpu, "numa")
        for i, (cpus, mib, _node) in enumerate(spec.numa_cells):
            ET.SubElement(numa, "cell", id=str(i), cpus=format_cpulist(cpus), memory=str(mib), unit="MiB")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "destroy"
    ET.SubElement(dom, "on_crash").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    if spec.disk:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2" if spec.disk.endswith(".qcow2") else "raw")
        ET.SubElement(disk, "source", file=spec.disk)
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    if network:
        iface = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(iface, "source", bridge=network)
        ET.SubElement(iface, "mac", address=mac_address(spec.name))
        ET.SubElement(iface, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=console_log)
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="file")
    ET.SubElement(console, "source", path=console_log)
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    seclabel = ET.SubElement(dom, "seclabel", type="static", model="dac", relabel="no")
    ET.SubElement(seclabel, "label").text = "+0:+0"
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def run_checked(host: Host, argv: Sequence[str], what: str, timeout: float = 60.0) -> str:
    """Run argv on the host; its stdout, or ProvisionError naming the host, `what` and the command's message."""
    res = host.run(list(argv), timeout=timeout)
    if res.timed_out:
        raise ProvisionError(f"{host.name}: {what} did not finish within {timeout:.0f} s")
    if res.rc == 127:
        raise ProvisionError(f"{host.name}: {what}: {argv[0]} is not installed there")
    if not res.ok:
        raise ProvisionError(f"{host.name}: {what} failed: {' '.join((res.stderr or res.stdout).split())[:300] or res.rc}")
    return res.stdout


def locked(argv: Sequence[str]) -> list[str]:
    """argv under the host's guest lock (util-linux flock), so bridge changes never race a guest start."""
    return ["flock", LOCK, *argv]


def virsh(host: Host, *args: str, timeout: float = 60.0) -> str:
    """Run `virsh -c URI args...` on the host; raise ProvisionError with virsh's message if it fails."""
    res = host.run(["virsh", "-q", "-c", URI, *args], timeout=timeout)
    if res.rc == 127:
        raise ProvisionError(f"{host.name}: virsh is not installed; install libvirt-clients and libvirt-daemon-system")
    if res.timed_out:
        raise ProvisionError(f"{host.name}: virsh {args[0]} did not answer within {timeout:.0f} s")
    if res.rc:
        msg = " ".join((res.stderr or res.stdout).split())
        raise ProvisionError(f"{host.name}: virsh {args[0]} failed: {msg}")
    return res.stdout


def ensure_libvirtd(host: Host, timeout: float = 20.0) -> None:
    """Start virtlogd and libvirtd (daemonized) on the host if libvirt does not answer; wait until it does."""
    if _libvirt_answers(host):
        return
    # By pid file, not by process name: a test-bed host's libvirtd (another mount namespace) is not ours.
    script = 'for d in virtlogd libvirtd; do p=$(cat /run/$d.pid 2>/dev/null); [ -n "$p" ] && kill -0 "$p" 2>/dev/null || "$d" -d || exit 3; done'
    res = host.run(["sh", "-c", script], timeout=30)
    if not res.ok:
        raise ProvisionError(f"{host.name}: cannot start libvirtd: {res.tail()}; install libvirt-daemon-system")
    if not wait_until(lambda: _libvirt_answers(host), timeout, interval=0.3):
        raise ProvisionError(f"{host.name}: libvirtd did not answer on {URI} within {timeout:.0f} s")


def _libvirt_answers(host: Host) -> bool:
    try:
        virsh(host, "version", timeout=10)
    except ProvisionError:
        return False
    return True


def ensure_bridge(host: Host, bridge: str = BRIDGE, subnet: str = SUBNET) -> None:
    """Create the host-only guest bridge with the host's address on the host if it is missing."""
    q = shlex.quote
    script = (
        f"[ -e /sys/class/net/{q(bridge)} ] && exit 0; "
        f"ip link add name {q(bridge)} type bridge && ip addr add {q(host_address(subnet))} dev {q(bridge)} "
        f"&& ip link set {q(bridge)} up"
    )
    run_checked(host, locked(["sh", "-c", script]), f"creating guest bridge {bridge}")


def bridge_ports(host: Host, bridge: str = BRIDGE) -> list[str]:
    """Interfaces attached to the bridge (a guest's tap device, a Xen vif); [] if it has none or is absent."""
    res = host.run(["sh", "-c", f"ls /sys/class/net/{shlex.quote(bridge)}/brif 2>/dev/null; exit 0"], timeout=30)
    return sorted(res.stdout.split())


def remove_bridge(host: Host, bridge: str = BRIDGE) -> None:
    """Delete the guest bridge if no guest is on it any more (no-op if absent)."""
    b = shlex.quote(bridge)
    script = f"[ -e /sys/class/net/{b} ] || exit 0; [ -z \"$(ls /sys/class/net/{b}/brif)\" ] && ip link del {b}; exit 0"
    host.run(locked(["sh", "-c", script]), timeout=30)


def start(host: Host, spec: GuestSpec, *, bridge: str = BRIDGE, log_dir: str = LOG_DIR) -> RunningGuest:
    """Create the transient domain of `spec` on the host. Its console log is `log_dir/<name>.log` there."""
    log = f"{log_dir}/{spec.name}.log"
    xml_path = f"{log_dir}/{spec.name}.xml"
    with tempfile.TemporaryDirectory(prefix="rnr-xml-") as tmp:
        local = Path(tmp) / f"{spec.name}.xml"
        local.write_text(domain_xml(spec, network=bridge, console_log=log))
        host.put(local, xml_path)
    run_checked(host, ["sh", "-c", f": > {shlex.quote(log)}"], f"creating console log {log}")
    virsh(host, "create", xml_path)
    return RunningGuest(spec.name, log, time.monotonic())


def destroy(host: Host, name: str) -> None:
    """Stop a guest at once (no-op if it does not exist); undefine it if it was persistent."""
    if name not in list_domains(host):
        return
    try:
        virsh(host, "destroy", name)
    except ProvisionError:
        if name in _running(host):  # it was still running, so destroy really failed
            raise
    if name in list_domains(host):
        virsh(host, "undefine", name)


def destroy_argv(name: str) -> list[str]:
    """The argv that destroys domain `name` on its host (for a dead man's switch)."""
    return ["virsh", "-q", "-c", URI, "destroy", name]


def list_domains(host: Host) -> list[str]:
    return [n for n in virsh(host, "list", "--all", "--name").split() if n]


def _running(host: Host) -> list[str]:
    return [n for n in virsh(host, "list", "--name").split() if n]


def list_campaign(host: Host, campaign: str) -> list[str]:
    """Names of the domains (running or defined) on the host that `campaign` created."""
    return sorted(n for n in list_domains(host) if belongs_to(n, campaign))


def console_tail(host: Host, log: str, lines: int = 8) -> str:
    """The last lines of a guest's console log on the host, on one line ("" if none)."""
    try:
        res = host.run(["tail", "-n", str(lines), log], timeout=15)
    except HostError:
        return ""
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", res.stdout)
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-600:]


KERNEL_STARTED = "Linux version"  # the kernel's first console line: it runs under the accelerator
PROBE_SLOW_FACTOR = 8  # the probe's time to init, once the kernel started, as a multiple of its time to start


def wait_console(host: Host, log: str, marker: str, timeout: float) -> float | None:
    """Seconds until `marker` appears in the console log on the host, or None after `timeout`."""
    start = time.monotonic()
    if wait_until(lambda: host.run(["grep", "-qF", marker, log], timeout=15).rc == 0, timeout, interval=0.3):
        return time.monotonic() - start
    return None


def wait_ssh(host: Host, address: str, timeout: float, port: int = 22) -> float:
    """Wait until an SSH server answers with its banner at `address` (an "A.B.C.D/NN" is fine) as seen
    from `host` (a channel the host opens: the guest network may be reachable from there only).

    Returns the seconds waited; raises ProvisionError after `timeout`.
    """
    ip = address.split("/")[0]
    start = time.monotonic()
    if wait_until(lambda: answers_ssh(lambda: host.open_channel(ip, port, timeout=5.0)), timeout, interval=0.3):
        return time.monotonic() - start
    raise ProvisionError(f"no SSH server answered at {ip}:{port} (from {host.name}) within {timeout:.0f} s")


def probe_accel(host: Host, kernel: str, initrd: str, timeout: float = 15.0, *, log_dir: str = LOG_DIR) -> str:
    """"kvm" if a KVM guest boots the image (kernel, initrd: paths on the host) to its init within
    `timeout` seconds on the host, else "tcg".

    Boots a 1-vCPU transient domain with `runner.probe` on the command line (init prints its marker and
    powers off) and watches its serial log. A stock guest on a software KVM backend hangs before the kernel
    prints its first line, so no kernel within `timeout` (or a refused domain) means: use TCG. A kernel that
    did start under KVM gets PROBE_SLOW_FACTOR times `timeout` to reach init: a nested KVM host that is still
    busy after its own boot is slow, not broken (its guests ran under TCG when 15 s decided it).
    """
    ensure_libvirtd(host)
    name = f"rnr-probe-{os.getpid()}"
    spec = GuestSpec(
        env="kvm", name=name, campaign="", index=0, vcpus=1, memory_mib=256, vcpu_pins=(), emulator_pins=(),
        numa_cells=(), kernel=kernel, initrd=initrd,
        cmdline="console=ttyS0 panic=-1 runner.probe", accel="kvm", guest_kernel="probe",
    )
    log = f"{log_dir}/{name}.log"
    with tempfile.TemporaryDirectory(prefix="rnr-xml-") as tmp:
        local = Path(tmp) / f"{name}.xml"
        local.write_text(domain_xml(spec, network=None, console_log=log))
        host.put(local, f"{log_dir}/{name}.xml")
    host.run(["sh", "-c", f": > {shlex.quote(log)}"], timeout=15)
    try:
        virsh(host, "create", f"{log_dir}/{name}.xml")
    except ProvisionError:
        return "tcg"
    try:
        booted = reaches_init(host, log, timeout)
    finally:
        destroy(host, name)
    return "kvm" if booted else "tcg"


def reaches_init(host: Host, log: str, timeout: float) -> bool:
    """Whether a probe guest writing its console to `log` on the host reaches its init: its kernel's first line
    within `timeout`, then the init marker within PROBE_SLOW_FACTOR times `timeout` (the accelerator probes of
    the kvm and qemu environments)."""
    if wait_console(host, log, KERNEL_STARTED, timeout) is None:
        return False
    return wait_console(host, log, INIT_MARKER, timeout * PROBE_SLOW_FACTOR) is not None


def qemu_pid(host: Host, name: str) -> int:
    """PID of the QEMU process of a running domain on the host (from libvirt's pid file)."""
    res = host.run(["cat", f"{PID_DIR}/{name}.pid"], timeout=15)
    try:
        return int(res.stdout.strip())
    except ValueError:
        raise ProvisionError(f"{host.name}: no QEMU pid for guest {name}; is it running?") from None


def parse_schedstat(text: str) -> tuple[int, int, int]:
    """/proc/PID/task/TID/schedstat: (ns on CPU, ns waiting on a runqueue = run delay, timeslices)."""
    on_cpu, delay, slices = (int(x) for x in text.split()[:3])
    return on_cpu, delay, slices


PID_DIR = "/run/libvirt/qemu"  # on the hypervisor host: libvirt's <domain>.pid of each QEMU process

# Prints "<name>\t<comm>\t<schedstat>" for every thread of the QEMU process of each guest named in "$@"
# after the first argument, the directory of the guests' <name>.pid files: one round trip for all the guests.
_SCHEDSTATS = (
    'd=$1; shift; for n in "$@"; do p=$(cat "$d/$n.pid" 2>/dev/null) || continue; '
    'for t in /proc/"$p"/task/*; do printf "%s\t%s\t%s\n" "$n" "$(cat "$t/comm")" "$(cat "$t/schedstat")"; done; '
    'done 2>/dev/null; exit 0'
)


def parse_vcpu_schedstats(text: str) -> dict[str, dict[int, tuple[int, int, int]]]:
    """From lines "<domain>\t<comm>\t<schedstat>" of QEMU threads: domain -> vCPU index -> schedstat.

    vCPU threads are the tasks whose comm is "CPU <n>/KVM" (or "CPU <n>/TCG" under TCG)."""
    out: dict[str, dict[int, tuple[int, int, int]]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("\t")
        comm, _, stat = rest.partition("\t")
        m = re.fullmatch(r"CPU (\d+)/\w+", comm.strip())
        if m and stat.strip():
            out.setdefault(name, {})[int(m.group(1))] = parse_schedstat(stat)
    return out


def vcpu_schedstats(host: Host, names: Sequence[str], pid_dir: str = PID_DIR) -> dict[str, dict[int, tuple[int, int, int]]]:
    """Per-vCPU schedstat of running QEMU guests on the host (their pid files in `pid_dir`: libvirt's, or
    the qemu environment's), in one command: guest -> vCPU index -> (on-CPU ns, run delay ns, timeslices).
    A guest that is not running is left out."""
    return parse_vcpu_schedstats(host.run(["sh", "-c", _SCHEDSTATS, "sh", pid_dir, *names], timeout=15).stdout)


def parse_vcpupin(text: str) -> tuple[tuple[int, ...], ...]:
    """`virsh vcpupin NAME` output -> the host CPUs of each vCPU, in vCPU order."""
    pins: dict[int, tuple[int, ...]] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(\d+)\s+(\S+)\s*", line)
        if m:
            pins[int(m.group(1))] = tuple(_cpulist(m.group(2)))
    return tuple(pins[i] for i in sorted(pins))


def _cpulist(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def vcpu_pins(host: Host, name: str) -> tuple[tuple[int, ...], ...]:
    """The pinning libvirt actually applied to a running domain (read back, not what was asked)."""
    return parse_vcpupin(virsh(host, "vcpupin", name))


def parse_proc_stat_steal(text: str) -> tuple[int, int]:
    """From a guest's /proc/stat: (steal ticks, total ticks) of the aggregate "cpu" line."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(x) for x in fields[1:]]
            # user nice system idle iowait irq softirq steal guest guest_nice; guest* are inside user/nice.
            return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])
    raise ProvisionError("no aggregate 'cpu' line in /proc/stat output")
