"""`qemu`: plain QEMU guests without libvirt, the way the lab's VBENCH runs them.

For hosts where libvirt is not wanted. Each guest is one `qemu-system-x86_64` process started on the
hypervisor host through its Host (over its SSH connection for a lab host) and daemonized there:

- accelerator: `-accel kvm -cpu host` where a KVM guest really boots on the host (a short probe with the
  image's `runner.probe` boot, once per host), else `-accel tcg`; the trial records which;
- boot: direct kernel boot of the same kernel + initramfs (or disk image with its overlay) the kvm
  environment boots, console on the emulated serial port, written to `<logs>/<name>.log` on the host;
- CPUs: the emulator runs under `taskset` on the trial's host CPUs, and each vCPU thread (named
  "CPU <n>/KVM" or "CPU <n>/TCG" with `debug-threads=on`) is pinned with `taskset -p` to its vCPU's CPUs
  once QEMU has started; guest NUMA nodes with `-numa node` on memory bound to the host node;
- network: a tap device per guest (`rnrq<hash of the name>`) on the same host-only guest bridge the kvm
  environment uses, the same static address and MAC, so the guest is reached the same way (SSH through a
  channel its hypervisor host opens);
- destroy: SIGTERM to the process in `<RUN_DIR>/<name>.pid` (QEMU quits as on QMP `quit`), SIGKILL if it
  is still there after 5 s, then its tap device and files are removed; `leftovers` are the pid files of
  the campaign's guests there.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Mapping, Sequence

from runner.errors import ProvisionError
from runner.hosts.base import Host
from runner.provision import image, libvirt
from runner.provision.environments.base import BootOrder, Network, register
from runner.provision.environments.vm import VirtualMachines
from runner.provision.guestspec import GuestSpec, belongs_to
from runner.provision.topology import format_cpulist, parse_cpulist

QEMU = "qemu-system-x86_64"
RUN_DIR = "/run/runner/qemu"  # on the hypervisor host: <name>.pid and <name>.qmp of each running guest
STOP_WAIT_S = 5  # after SIGTERM, before SIGKILL

# $1 the guest's name, $2 its tap device: stop its QEMU (only if that pid is still this guest's QEMU),
# then remove its tap and files. Idempotent; also what the dead man's switch runs.
_DESTROY = (
    f'd={RUN_DIR}; p=$(cat "$d/$1.pid" 2>/dev/null); '
    'if [ -n "$p" ] && grep -qaF -- "$1," "/proc/$p/cmdline" 2>/dev/null; then kill -TERM "$p"; i=0; '
    f'while kill -0 "$p" 2>/dev/null && [ $i -lt {STOP_WAIT_S * 10} ]; do sleep 0.1; i=$((i+1)); done; '
    'kill -KILL "$p" 2>/dev/null; fi; ip link del "$2" 2>/dev/null; rm -f "$d/$1.pid" "$d/$1.qmp"; exit 0'
)

# $1 the pid file, then the host CPU list of vCPU 0, 1, ...: pin each vCPU thread of that QEMU to its list.
_PIN = (
    'p=$(cat "$1") || exit 3; shift; for t in /proc/"$p"/task/*; do c=$(cat "$t/comm"); case "$c" in "CPU "*/*) '
    'n=${c#CPU }; n=${n%%/*}; eval "cpus=\\${$((n+1))}"; [ -n "$cpus" ] && { taskset -pc "$cpus" "${t##*/}" >/dev/null || exit 4; };; '
    'esac; done; exit 0'
)

# $1 the pid file: "<vCPU> <allowed CPU list>" of each vCPU thread.
_PINS = (
    'p=$(cat "$1") || exit 3; for t in /proc/"$p"/task/*; do c=$(cat "$t/comm"); case "$c" in "CPU "*/*) '
    'n=${c#CPU }; echo "${n%%/*} $(sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" "$t/status")";; esac; done'
)


def tap_name(name: str) -> str:
    """The guest's tap device: rnrq + 8 hex digits of its name (IFNAMSIZ allows 15 characters)."""
    return "rnrq" + hashlib.sha256(name.encode()).hexdigest()[:8]


def qemu_argv(spec: GuestSpec, *, tap: str | None, console_log: str, run_dir: str = RUN_DIR) -> list[str]:
    """The command that starts (daemonized) the QEMU process of `spec` (pure): accel kvm or tcg, memory,
    vCPUs, guest NUMA nodes, direct kernel boot, virtio disk and network on `tap` (None: no network),
    serial console to `console_log`, QMP socket and pid file in `run_dir`, no graphics, no reboot."""
    if spec.accel not in ("kvm", "tcg"):
        raise ProvisionError(f"guest {spec.name}: plain QEMU runs guests with accel kvm or tcg, not {spec.accel}")
    argv = [*(["taskset", "-c", format_cpulist(spec.emulator_pins)] if spec.emulator_pins else []), QEMU,
            "-name", f"{spec.name},debug-threads=on", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", spec.accel, *(["-cpu", "host"] if spec.accel == "kvm" else []),
            "-m", str(spec.memory_mib), "-smp", str(spec.vcpus)]
    for j, (cpus, mib, node) in enumerate(spec.numa_cells):
        argv += ["-object", f"memory-backend-ram,id=m{j},size={mib}M,host-nodes={node},policy=bind",
                 "-numa", f"node,nodeid={j},cpus={min(cpus)}-{max(cpus)},memdev=m{j}"]
    argv += ["-kernel", spec.kernel, *(["-initrd", spec.initrd] if spec.initrd else []), "-append", spec.cmdline]
    if spec.disk:
        fmt = "qcow2" if spec.disk.endswith(".qcow2") else "raw"
        argv += ["-drive", f"file={spec.disk},format={fmt},if=virtio"]
    if tap is not None:
        argv += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=n0,mac={libvirt.mac_address(spec.name)}"]
    return argv + ["-serial", f"file:{console_log}", "-qmp", f"unix:{run_dir}/{spec.name}.qmp,server=on,wait=off",
                   "-pidfile", f"{run_dir}/{spec.name}.pid", "-daemonize"]


def probe_accel(host: Host, kernel: str, initrd: str, timeout: float, log_dir: str) -> str:
    """"kvm" if a 1-vCPU KVM guest of the image boots to its init on the host (its init prints the marker and
    powers off with `runner.probe`), else "tcg" (no usable /dev/kvm, or it hangs). Like libvirt.probe_accel:
    its kernel's first line within `timeout` s, then PROBE_SLOW_FACTOR times that to reach init (a busy nested
    KVM host is slow, not broken)."""
    name = f"rnr-qprobe-{os.getpid()}"
    log, pid = f"{log_dir}/{name}.log", f"{RUN_DIR}/{name}.pid"
    argv = [QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-accel", "kvm", "-cpu", "host",
            "-m", "256", "-smp", "1", "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 runner.probe",
            "-serial", f"file:{log}", "-pidfile", pid, "-daemonize"]
    q = shlex.quote
    try:
        started = host.run(["sh", "-c", f"mkdir -p {q(log_dir)} {RUN_DIR}; : > {q(log)}; {shlex.join(argv)} >/dev/null 2>&1"],
                           timeout=60).ok  # not: QEMU refused KVM (no /dev/kvm, no access, or KVM failed at once)
        booted = started and libvirt.reaches_init(host, log, timeout)
    finally:
        host.run(["sh", "-c", f"[ -s {pid} ] && kill -9 $(cat {pid}) 2>/dev/null; rm -f {q(log)} {pid}; true"], timeout=15)
    return "kvm" if booted else "tcg"


@register("qemu")
class Qemu(VirtualMachines):
    guest_noun = "QEMU guest"
    accels = ("kvm", "tcg")
    host_tools = ((QEMU,), "qemu-system-x86 (and iproute2, util-linux for ip and taskset)")

    def accel(self, hv: Host, order: BootOrder) -> str:
        img = order.images.ship_image(hv, order.images.kernel_image(self, {}))
        return order.images.memoized(("qemu-accel", hv.name), lambda: probe_accel(
            hv, str(img.kernel), str(img.initrd), order.probe_timeout_s, order.logs))

    def start(self, hv: Host, spec: GuestSpec, net: Network, logs: str) -> None:
        tap, log = tap_name(spec.name), self.console_log(spec, logs)
        q = shlex.quote
        script = (
            f"set -e; mkdir -p {RUN_DIR} {q(logs)}; : > {q(log)}; ip link del {tap} 2>/dev/null || true; "
            f"{shlex.join(libvirt.locked(['sh', '-c', f'ip tuntap add dev {tap} mode tap && ip link set {tap} master {q(net.bridge)} && ip link set {tap} up']))}; "
            + shlex.join(qemu_argv(spec, tap=tap, console_log=log))
        )
        res = hv.run(["sh", "-c", script], timeout=120)
        if not res.ok:
            hv.run(["sh", "-c", _DESTROY, "rnr-qemu-destroy", spec.name, tap], timeout=60)
            raise ProvisionError(f"{hv.name}: cannot start QEMU guest {spec.name}: {res.tail()}")
        if spec.vcpu_pins:
            pins = [format_cpulist(p) for p in spec.vcpu_pins]
            pinned = hv.run(["sh", "-c", _PIN, "rnr-qemu-pin", f"{RUN_DIR}/{spec.name}.pid", *pins], timeout=60)
            if not pinned.ok:
                raise ProvisionError(f"{hv.name}: cannot pin the vCPU threads of QEMU guest {spec.name} (taskset): {pinned.tail()}")

    def leftovers(self, hv: Host, campaign: str) -> list[str]:
        listed = hv.run(["sh", "-c", f"ls -1 {RUN_DIR} 2>/dev/null; exit 0"], timeout=30).stdout.split()
        return sorted(n[:-4] for n in listed if n.endswith(".pid") and belongs_to(n[:-4], campaign))

    def destroy(self, hv: Host, name: str) -> None:
        res = hv.run(self.destroy_argv(hv, name), timeout=STOP_WAIT_S + 60)
        if not res.ok:
            raise ProvisionError(f"{hv.name}: cannot destroy QEMU guest {name}: {res.tail()}")

    def destroy_argv(self, hv: Host, name: str) -> list[str]:
        return ["sh", "-c", _DESTROY, "rnr-qemu-destroy", name, tap_name(name)]

    def schedstats(self, hv: Host, names: Sequence[str]) -> Mapping[str, Mapping[int, tuple[int, int, int]]] | None:
        return libvirt.vcpu_schedstats(hv, names, pid_dir=RUN_DIR)

    def pins(self, hv: Host, name: str) -> tuple[tuple[int, ...], ...] | None:
        res = hv.run(["sh", "-c", _PINS, "rnr-qemu-pins", f"{RUN_DIR}/{name}.pid"], timeout=30)
        if not res.ok:
            raise ProvisionError(f"{hv.name}: cannot read the vCPU pinning of QEMU guest {name}: {res.tail()}")
        return parse_pins(res.stdout)


def parse_pins(text: str) -> tuple[tuple[int, ...], ...]:
    """Lines "<vCPU> <CPU list>" -> the host CPUs of each vCPU, in vCPU order (pure)."""
    pins = {int(n): tuple(parse_cpulist(cpus)) for n, cpus in (line.split(None, 1) for line in text.splitlines() if line.strip())}
    return tuple(pins[i] for i in sorted(pins))
