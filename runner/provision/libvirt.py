"""The only module that talks to libvirt (through the `virsh` CLI; libvirt-python is not needed).

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
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ProvisionError
from runner.provision.guest import GuestSpec, belongs_to
from runner.provision.image import INIT_MARKER, GuestImage
from runner.provision.topology import format_cpulist

URI = "qemu:///system"
BRIDGE = "rnrbr0"
SUBNET = "10.214.0.0/24"  # host-only, used by this project on this machine only
LOG_DIR = Path("/var/log/runner/guests")


@dataclass(frozen=True)
class RunningGuest:
    name: str
    console_log: Path
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
    if spec.env != "kvm" or spec.accel not in ("kvm", "tcg"):
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


def virsh(*args: str, timeout: float = 60.0) -> str:
    """Run `virsh -c URI args...`; raise ProvisionError with virsh's message if it fails."""
    try:
        proc = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ProvisionError("virsh is not installed; install libvirt-clients and libvirt-daemon-system") from None
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"virsh {args[0]} did not answer within {timeout:.0f} s") from None
    if proc.returncode:
        msg = " ".join((proc.stderr or proc.stdout).split())
        raise ProvisionError(f"virsh {args[0]} failed: {msg}")
    return proc.stdout


def ensure_libvirtd(timeout: float = 20.0) -> None:
    """Start virtlogd and libvirtd (daemonized) if libvirt does not answer; wait until it does."""
    if _libvirt_answers():
        return
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True, check=False).returncode:
            try:
                subprocess.run([daemon, "-d"], capture_output=True, timeout=30, check=False)
            except FileNotFoundError:
                raise ProvisionError(f"{daemon} is not installed; install libvirt-daemon-system") from None
    deadline = time.monotonic() + timeout
    while not _libvirt_answers():
        if time.monotonic() > deadline:
            raise ProvisionError(f"libvirtd did not answer on {URI} within {timeout:.0f} s")
        time.sleep(0.3)


def _libvirt_answers() -> bool:
    try:
        virsh("version", timeout=10)
    except ProvisionError:
        return False
    return True


def ensure_bridge(bridge: str = BRIDGE, subnet: str = SUBNET) -> bool:
    """Create the host-only guest bridge with the host's address if missing. True if it was created."""
    if Path(f"/sys/class/net/{bridge}").exists():
        return False
    for argv in (
        ["ip", "link", "add", "name", bridge, "type", "bridge"],
        ["ip", "addr", "add", host_address(subnet), "dev", bridge],
        ["ip", "link", "set", bridge, "up"],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise ProvisionError(f"cannot create guest bridge {bridge}: {' '.join(argv)}: {proc.stderr.strip()}")
    return True


def bridge_ports(bridge: str = BRIDGE) -> list[str]:
    """Interfaces attached to the bridge (a guest's tap device, a Xen vif); [] if it has none or is absent."""
    brif = Path(f"/sys/class/net/{bridge}/brif")
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []


def remove_bridge(bridge: str = BRIDGE) -> None:
    """Delete the guest bridge (no-op if absent)."""
    if Path(f"/sys/class/net/{bridge}").exists():
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def start(spec: GuestSpec, *, bridge: str = BRIDGE, log_dir: Path = LOG_DIR) -> RunningGuest:
    """Create the transient domain of `spec`. Its console log is `log_dir/<name>.log` (truncated first)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{spec.name}.log"
    log.write_text("")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", prefix=f"{spec.name}.") as f:
        f.write(domain_xml(spec, network=bridge, console_log=str(log)))
        f.flush()
        virsh("create", f.name)
    return RunningGuest(spec.name, log, time.monotonic())


def destroy(name: str) -> None:
    """Stop a guest at once (no-op if it does not exist); undefine it if it was persistent."""
    if name not in list_domains():
        return
    try:
        virsh("destroy", name)
    except ProvisionError:
        if name in _running():  # it was still running, so destroy really failed
            raise
    if name in list_domains():
        virsh("undefine", name)


def list_domains() -> list[str]:
    return [n for n in virsh("list", "--all", "--name").split() if n]


def _running() -> list[str]:
    return [n for n in virsh("list", "--name").split() if n]


def list_campaign(campaign: str) -> list[str]:
    """Names of the domains (running or defined) that `campaign` created."""
    return sorted(n for n in list_domains() if belongs_to(n, campaign))


def wait_console(log: Path, marker: str, timeout: float) -> float | None:
    """Seconds until `marker` appears in the console log, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if marker in log.read_text(errors="replace"):
                return time.monotonic() - start
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    return None


def wait_ssh(address: str, timeout: float, port: int = 22) -> float:
    """Wait until an SSH server answers with its banner at `address` (an "A.B.C.D/NN" is fine).

    Returns the seconds waited; raises ProvisionError after `timeout`.
    """
    ip = address.split("/")[0]
    start = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise ProvisionError(f"no SSH server answered at {ip}:{port} within {timeout:.0f} s")
        try:
            with socket.create_connection((ip, port), timeout=min(2.0, left)) as s:
                s.settimeout(min(5.0, max(left, 0.1)))
                if s.recv(64).startswith(b"SSH-"):
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.3)


def probe_accel(image: GuestImage, timeout: float = 15.0, *, log_dir: Path = LOG_DIR) -> str:
    """"kvm" if a KVM guest boots the image to its init within `timeout` seconds here, else "tcg".

    Boots a 1-vCPU transient domain with `runner.probe` on the command line (init prints its marker and
    powers off) and watches its serial log. A stock guest on a software KVM backend hangs after the
    decompressor, so a timeout (or a refused domain) means: use TCG.
    """
    ensure_libvirtd()
    name = f"rnr-probe-{os.getpid()}"
    spec = GuestSpec(
        env="kvm", name=name, campaign="", index=0, vcpus=1, memory_mib=256, vcpu_pins=(), emulator_pins=(),
        numa_cells=(), kernel=str(image.kernel), initrd=str(image.initrd),
        cmdline="console=ttyS0 panic=-1 runner.probe", accel="kvm", guest_kernel="probe",
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    log.write_text("")
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(domain_xml(spec, network=None, console_log=str(log)))
        f.flush()
        try:
            virsh("create", f.name)
        except ProvisionError:
            return "tcg"
    try:
        booted = wait_console(log, INIT_MARKER, timeout)
    finally:
        destroy(name)
    return "kvm" if booted is not None else "tcg"


def qemu_pid(name: str) -> int:
    """PID of the QEMU process of a running domain (from libvirt's pid file)."""
    try:
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    except (OSError, ValueError):
        raise ProvisionError(f"no QEMU pid for guest {name}; is it running?") from None


def parse_schedstat(text: str) -> tuple[int, int, int]:
    """/proc/PID/task/TID/schedstat: (ns on CPU, ns waiting on a runqueue = run delay, timeslices)."""
    on_cpu, delay, slices = (int(x) for x in text.split()[:3])
    return on_cpu, delay, slices


def vcpu_schedstats(pid: int) -> dict[int, tuple[int, int, int]]:
    """Per-vCPU schedstat of a QEMU process: vCPU index -> (on-CPU ns, run delay ns, timeslices).

    vCPU threads are the tasks whose comm is "CPU <n>/KVM" (or "CPU <n>/TCG" under TCG).
    """
    out: dict[int, tuple[int, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            m = re.fullmatch(r"CPU (\d+)/\w+", (task / "comm").read_text().strip())
            if m:
                out[int(m.group(1))] = parse_schedstat((task / "schedstat").read_text())
        except OSError:  # the thread exited between listing and reading
            continue
    return out


def parse_proc_stat_steal(text: str) -> tuple[int, int]:
    """From a guest's /proc/stat: (steal ticks, total ticks) of the aggregate "cpu" line."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(x) for x in fields[1:]]
            # user nice system idle iowait irq softirq steal guest guest_nice; guest* are inside user/nice.
            return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])
    raise ProvisionError("no aggregate 'cpu' line in /proc/stat output")
