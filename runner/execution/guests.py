"""Guest environments: `container`, `kvm` (libvirt, KVM or TCG), `xen-hvm`, `xen-pvh` and `xen-pv` (xl).

An environment turns (hypervisor Host, the trial's guest configuration) into k Hosts, one per guest or
container, and the ordinary workload path runs on each of them. The hypervisor Host is any Host: this
machine or a lab host over SSH; every libvirt, xl and podman command runs on it through its Host, and a
guest is an SSH host reached through a channel its hypervisor host opens (runner.hosts.ssh, `via=`), so
a guest network that only the hypervisor host sees is enough.

For one trial an environment:
1. finds the running guests of the same configuration on that host (`Boot`, cached in this worker process)
   or boots them: builds, once and cached by content, the guest image (kernel + initramfs with the
   campaign's SSH key and the workload's `guest_files`) or container image, copies it to the host's image
   cache by digest (nothing is copied when the host already has it), starts the trial's `vms` guests on
   the SAME host CPUs (over-commit), waits until each answers SSH through the host, and reads what the
   guest reports about itself (kernel release, command line, CPUs, paravirtual features) and the pinning
   libvirt applied. A dead man's switch on the hypervisor host (`Host.spawn`) destroys the guests if this
   worker process or its connection dies (Ctrl-C, SIGKILL of the controller, a killed Dask worker);
2. prepares the workload once per boot on every guest (`Workload.prepare`, ctx.workdir = GUEST_WORKDIR);
3. starts the workload in all guests at once (a barrier: one thread per guest, released together), reads
   telemetry around it, and records the common window (latest start to earliest end) and each guest's
   overlap with it;
4. returns per-guest metrics (`vm` = guest index) and totals (`vm` null): `throughput` and
   `aggregate_throughput` (sum over guests), `vm_jain`, `vms`, guest steal time, host-side vCPU run
   delay, and the boot that served the trial.
Guests are kept for the next trial when the controller says one of the same configuration follows on
this host (`keep_guests`), and destroyed otherwise, after a failed or timed-out trial, when a trial with
another configuration arrives, on Ctrl-C and at the end of the campaign (`release_all`).

The trial's `timeout` bounds the workload; booting has its own limit, boot_timeout_s() (env
RUNNER_GUEST_BOOT_TIMEOUT).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from runner import defaults
from runner.errors import HostError, ProvisionError
from runner.execution.environments import Outcome, finish, probe_window, register, register_guests, with_probes
from runner.fairness import jain
from runner.hosts.base import CommandResult, Host, Spawned
from runner.hosts.container import ContainerHost
from runner.hosts.ssh import HostSpec, SSHHost
from runner.probes.session import ProbeWindow
from runner.provision import container, image, libvirt, rootfs, xen
from runner.provision.guest import GuestSpec, campaign_slug, describe_guest
from runner.provision.topology import TOPOLOGY_SCRIPT, Topology, parse_topology_dump
from runner.trials import guest_config_key
from runner.workloads.base import GUEST_WORKDIR, Metric, Workload, WorkloadContext
from runner.util import env_seconds

def boot_timeout_s() -> float:  # read when used: a bad value fails the trial with one line, in its worker
    return env_seconds("RUNNER_GUEST_BOOT_TIMEOUT", 240.0)


def probe_timeout_s() -> float:  # a nested KVM host boots its probe slowly
    return env_seconds("RUNNER_PROBE_TIMEOUT", 15.0)
BARRIER_TIMEOUT_S = 120.0
WINDOW_SLACK_S = 20.0  # how much longer than its window a stoppable run is started (room for a slow start)
STOP_TIMEOUT_S = 20.0  # for the command that ends a guest's run at the common instant (window)
CONSOLES = {"kvm": "console=ttyS0", "xen-hvm": "console=ttyS0", "xen-pvh": "console=hvc0", "xen-pv": "console=hvc0"}
IMAGE_CACHE = "/var/cache/runner/images"  # on a remote hypervisor host: <digest>/{vmlinuz,initrd.img,disk.qcow2}
ROOT_DEVICES = {"kvm": "/dev/vda", "xen-hvm": "/dev/xvda", "xen-pvh": "/dev/xvda", "xen-pv": "/dev/xvda"}  # a disk image's root, by env
# This machine's guest builds (images, the guest key, workload payloads), per user and content-addressed,
# so campaigns share them: env RUNNER_CACHE, default ~/.cache/runner.
CONTROLLER_CACHE = Path(os.environ.get("RUNNER_CACHE", "~/.cache/runner")).expanduser()

# Prints what a guest reports about itself, one "key value" line each.
FACTS_SCRIPT = (
    'echo "kernel_release $(uname -r)"; echo "cmdline $(cat /proc/cmdline)"; '
    'echo "online_cpus $(cat /sys/devices/system/cpu/online 2>/dev/null)"; '
    'echo "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"; '
    'echo "hypervisor $(dmesg 2>/dev/null | grep -o "Hypervisor detected: .*" | head -n 1 | cut -d: -f2)"; '
    '{ dmesg 2>/dev/null | grep -qi "stealtime\\|steal time" || awk \'/^cpu /{exit !($9 > 0)}\' /proc/stat; } && echo "pv steal_time"; '
    'dmesg 2>/dev/null | grep -qi "PV spinlocks enabled\\|paravirt.*spinlock" && echo "pv pv_spinlocks"; '
    'dmesg 2>/dev/null | grep -qi "kvm-clock" && echo "pv kvm_clock"; '
    # The Xen guest type as Linux sees it: /sys/hypervisor/guest_type (PV, PVH or HVM); else a PV guest's
    # Linux detects "Xen PV" (PVH and HVM guests detect "Xen HVM")
    't=$(cat /sys/hypervisor/guest_type 2>/dev/null); '
    '{ [ "$t" = PV ] || { [ -z "$t" ] && dmesg 2>/dev/null | grep -q "Hypervisor detected: Xen PV"; }; } && echo "pv xen_pv"; '
    '[ "$t" = PVH ] && echo "pv xen_pvh"; exit 0'
)


# ------------------------------------------------------------------------------------------ pure parts


def guest_params(env: str, params: Mapping[str, Any], host_cpus: int) -> dict[str, Any]:
    """The `describe_guest` parameters of a trial: vcpus (default: all host CPUs), memory (default
    defaults.GUEST_MEMORY_MIB), vms (default defaults.VMS), pin and guest_numa if given, guest_kernel (default "default")."""
    out: dict[str, Any] = {
        "vcpus": params.get("vcpus", host_cpus),
        "memory": params.get("memory", defaults.GUEST_MEMORY_MIB),
        "vms": params.get("vms", defaults.VMS),
    }
    out |= {k: params[k] for k in ("pin", "guest_numa") if k in params}
    if env != "container":
        out["guest_kernel"] = params.get("guest_kernel", "default")
    return out


def image_choice(params: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """The trial's guest image: its catalog name (default minimal) and the matrix's entry for it (None:
    built in)."""
    return str(params.get("guest_image", "minimal")), params.get("guest_image_spec")


def guest_catalog(img: image.GuestImage, env: str, params: Mapping[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """The guest kernel catalog: `default` = the image's kernel (this machine's), `nopvspin` = the same
    kernel with `nopvspin` (no paravirtual spinlocks) on its command line, and the trial's kernel from the
    matrix's `guest_kernels` (its image is `img` then), with its extra command line."""
    base = image.DEFAULT_CMDLINE.replace("console=ttyS0", CONSOLES[env])
    catalog = {"default": img.catalog_entry(base), "nopvspin": img.catalog_entry(f"{base} nopvspin")}
    spec = (params or {}).get("guest_kernel_spec")
    if spec:
        catalog[str(params["guest_kernel"])] = img.catalog_entry(f"{base} {spec.get('cmdline', '')}".strip())
    return catalog


def steal_pct(before: str, after: str) -> float | None:
    """Guest steal time in % of all CPU time between two /proc/stat texts; None if no time passed."""
    s0, t0 = libvirt.parse_proc_stat_steal(before)
    s1, t1 = libvirt.parse_proc_stat_steal(after)
    return 100.0 * (s1 - s0) / (t1 - t0) if t1 > t0 else None


def run_delay_s(before: Mapping[int, tuple[int, int, int]], after: Mapping[int, tuple[int, int, int]]) -> float | None:
    """Seconds the guest's vCPU threads waited on host runqueues between two vcpu_schedstats snapshots."""
    common = set(before) & set(after)
    if not common:
        return None
    return sum(after[v][1] - before[v][1] for v in common) / 1e9


def common_window(spans: Sequence[tuple[float, float]]) -> tuple[float, float, list[float]]:
    """The window all guests measured in (latest start, earliest end) and each guest's overlap with it:
    the fraction of the guest's own span inside the window (1.0: it measured exactly the common window)."""
    start, end = max(s for s, _ in spans), min(e for _, e in spans)
    width = max(0.0, end - start)
    return start, end, [min(1.0, width / (e - s)) if e > s else 0.0 for s, e in spans]


def window_plan(plugin: Workload, params: Mapping[str, Any], guests: int, timeout: float) -> tuple[float, dict[str, Any]] | None:
    """For k > 1 guests and a workload that can be stopped early: (seconds of the common window, the
    parameters to start it with: a longer measuring time, so the runner's stop ends every guest's run at
    one instant). None: each guest measures its own time (k = 1, or the workload cannot be windowed)."""
    name = plugin.window_param
    if guests < 2 or name is None:
        return None
    seconds = float(params.get(name, plugin.window_default))
    longer = min(2 * seconds + WINDOW_SLACK_S, timeout - 5.0)
    if longer <= seconds + 1.0:
        return None
    return seconds, {**params, name: round(longer, 3)}


def parse_guest_facts(text: str) -> dict[str, Any]:
    """FACTS_SCRIPT's output -> {kernel_release, cmdline, online_cpus, clocksource, hypervisor, pv_features}."""
    facts: dict[str, Any] = {"pv_features": []}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "pv":
            facts["pv_features"].append(value.strip())
        elif key:
            facts[key] = value.strip()
    return facts


def combine(per_vm: Sequence[Sequence[Metric]], telemetry: Sequence[Mapping[str, float | None]]) -> list[Metric]:
    """Per-guest metrics (relabelled vm = i), per-guest telemetry, then the totals across guests (vm null).

    telemetry[i] may hold `ssh_ready_s`, `guest_steal_pct`, `vcpu_run_delay_s`, `window_overlap`
    (None: not available)."""
    units = {"ssh_ready_s": ("s", False), "guest_steal_pct": ("%", False), "vcpu_run_delay_s": ("s", False),
             "window_overlap": ("fraction", True)}
    out: list[Metric] = []
    for i, (metrics, tel) in enumerate(zip(per_vm, telemetry, strict=True)):
        out += [replace(m, vm=i) for m in metrics]
        out += [Metric(name, float(v), *units[name], vm=i) for name, v in tel.items() if v is not None]
    k = len(per_vm)
    out.append(Metric("vms", float(k), "guests", None))
    tput = [m.value for metrics in per_vm for m in metrics if m.name == "throughput" and m.thread is None]
    if len(tput) == k:
        unit = next(m.unit for m in per_vm[0] if m.name == "throughput")
        out += [
            Metric("throughput", sum(tput), unit, True),
            Metric("aggregate_throughput", sum(tput), unit, True),
            Metric("vm_jain", jain(tput), "index", True),
        ]
    # A kernel build's rate adds up over the guests like a throughput; per core over all their cores.
    builds = [m.value for metrics in per_vm for m in metrics if m.name == "builds_per_hour" and m.thread is None]
    cores = [m.value for metrics in per_vm for m in metrics if m.name == "cores" and m.thread is None]
    if len(builds) == k:
        out += [Metric("builds_per_hour", sum(builds), "builds/h", True), Metric("vm_jain", jain(builds), "index", True)]
        if len(cores) == k and sum(cores) > 0:
            out += [Metric("builds_per_hour_per_core", sum(builds) / sum(cores), "builds/h/core", True),
                    Metric("cores", sum(cores), "cores", None)]
    totals = {"ssh_ready_s": max, "guest_steal_pct": lambda v: sum(v) / len(v), "vcpu_run_delay_s": sum, "window_overlap": min}
    for name, agg in totals.items():
        values = [t[name] for t in telemetry if t.get(name) is not None]
        if len(values) == k:
            out.append(Metric(name, float(agg(values)), *units[name]))
    return out


def merge_outcomes(outcomes: Sequence[Outcome], telemetry: Sequence[Mapping[str, float | None]], **fields: Any) -> Outcome:
    """One Outcome of a trial from the Outcomes of its guests: the first failure or timeout wins."""
    wall = max((o.workload_wall_s for o in outcomes if o.workload_wall_s is not None), default=None)
    for o in outcomes:
        if o.status != "ok":
            return Outcome(o.status, o.error, workload_wall_s=wall, **fields)
    return Outcome("ok", None, tuple(combine([o.metrics for o in outcomes], telemetry)), wall, **fields)


# ------------------------------------------------------------------------------ images, on any host


_memo: dict[tuple[Any, ...], Any] = {}
_memo_lock = threading.Lock()


def _memoized(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    with _memo_lock:
        if key not in _memo:
            _memo[key] = make()
        return _memo[key]


def _cache_dir() -> Path:
    """Where this process builds guest images, keys and payloads (CONTROLLER_CACHE)."""
    return CONTROLLER_CACHE


def _guest_files(plugin: Workload, cache: Path) -> dict[str, Path]:
    return _memoized(("files", plugin.name, str(cache)), lambda: {k: Path(v) for k, v in plugin.guest_files(cache / "payload").items()})


def _guest_image(cache: Path, files: Mapping[str, Path], env: str, params: Mapping[str, Any] | None = None) -> image.GuestImage:
    """The guest image (kernel + initramfs) for the trial: the host's kernel, or the matrix's guest_kernels entry."""
    nets = image.NET_MODULES if env == "kvm" else image.NET_MODULES + image.XEN_NET_MODULES
    key = image.campaign_keypair(cache / "keys")
    spec = (params or {}).get("guest_kernel_spec") or {}
    kernel = Path(spec["kernel"]) if spec.get("kernel") else None
    if kernel is not None and not kernel.is_file():
        raise ProvisionError(f"guest kernel {params['guest_kernel']!r}: {kernel} does not exist on this machine")
    return _memoized(("image", str(cache), tuple(sorted(files.items())), nets, str(kernel)),
                     lambda: image.build_image(cache / "images", key_path=key, extra_files=files, net_modules=nets, kernel=kernel))


def _ship(host: Host, digest: str, files: Mapping[str, Path], what: str) -> dict[str, Path]:
    """Copy `files` (name -> local file) once into IMAGE_CACHE/<digest>/ on a remote host (kept there: a
    later campaign with the same image copies nothing); their paths there, by name."""
    where = f"{IMAGE_CACHE}/{digest}"
    have = host.run(["sh", "-c", " && ".join(f"test -s {shlex.quote(f'{where}/{n}')}" for n in files)], timeout=30)
    if not have.ok:
        for name, local in files.items():
            try:
                host.put(local, f"{where}/{name}")
            except HostError as exc:
                raise ProvisionError(f"{host.name}: cannot copy the {what} {digest[:12]} there: {exc}") from None
    return {n: Path(f"{where}/{n}") for n in files}


def ship_image(host: Host, img: image.GuestImage) -> image.GuestImage:
    """The image as the host sees it: a local host uses the built files; a remote host gets them once (_ship)."""
    if host.is_local:
        return img

    def ship() -> image.GuestImage:
        there = _ship(host, img.digest, {"vmlinuz": img.kernel, "initrd.img": img.initrd}, "guest image")
        return replace(img, kernel=there["vmlinuz"], initrd=there["initrd.img"])

    return _memoized(("shipped", host.name, img.digest), ship)


def _kernel_of(params: Mapping[str, Any]) -> tuple[Path, Path | None]:
    """The guest kernel of a disk-image trial and its initrd (/boot/initrd.img-<release> if there is one:
    Debian's has virtio_blk and ext4; a kernel without one must have them built in)."""
    spec = params.get("guest_kernel_spec") or {}
    kernel = Path(spec["kernel"]) if spec.get("kernel") else image.newest_kernel()
    if not kernel.is_file():
        raise ProvisionError(f"guest kernel {params.get('guest_kernel')!r}: {kernel} does not exist on this machine")
    initrd = kernel.parent / kernel.name.replace("vmlinuz", "initrd.img", 1)
    return kernel, initrd if initrd.is_file() else None


def _rootfs(cache: Path, entry: Mapping[str, Any] | None, progress: rootfs.Progress | None = None) -> rootfs.RootFS:
    recipe = rootfs.Recipe.from_entry(entry)
    return _memoized(("rootfs", str(cache), recipe), lambda: rootfs.build_rootfs(cache / "images", recipe, progress))


def disk_image(cache: Path, files: Mapping[str, Path], env: str, params: Mapping[str, Any],
               progress: rootfs.Progress | None = None) -> rootfs.DiskImage:
    """The trial's disk image (guest_image debian, a lab's recipe or a lab's own file), built once."""
    _name, entry = image_choice(params)
    kernel, initrd = _kernel_of(params)
    key = image.campaign_keypair(cache / "keys")
    if entry and "file" in entry:
        return _memoized(("file", entry["file"]), lambda: rootfs.file_image(Path(entry["file"]), entry["host_key"], key, kernel, initrd))
    base = _rootfs(cache, entry, progress)
    nets = image.NET_MODULES if env == "kvm" else image.NET_MODULES + image.XEN_NET_MODULES
    return _memoized(("disk", str(cache), base.digest, tuple(sorted(files.items())), nets, str(kernel)),
                     lambda: rootfs.build_disk(cache / "images", base, key_path=key, kernel=kernel, initrd=initrd,
                                               extra_files=files, net_modules=nets, progress=progress))


def prepare_images(plugin: Workload, trials_params: Sequence[Mapping[str, Any]],
                   progress: rootfs.Progress | None = None) -> dict[str, dict[str, Any]]:
    """Build, on this machine and before any trial, every disk image the trials use (each once, with
    progress messages); returns what the dataset's provenance records of each: image name -> digests,
    recipe and installed package versions."""
    cache = _cache_dir()
    files = _guest_files(plugin, cache) if any(p.get("env", defaults.ENV) != "host" for p in trials_params) else {}
    out: dict[str, dict[str, Any]] = {}
    for params in trials_params:
        env = str(params.get("env", defaults.ENV))
        name, entry = image_choice(params)
        if env == "host" or name == "minimal" or name in out and env == "container":
            continue
        if env == "container":
            if entry and "file" in entry:
                raise ProvisionError(f"guest image {name!r} is a disk image file: containers need a Debian recipe image")
            base = _rootfs(cache, entry, progress)
            out[name] = {"rootfs": base.digest, "packages": dict(base.packages), **_recipe_doc(entry)}
            continue
        disk = disk_image(cache, files, env, params, progress)
        doc = out.setdefault(name, {"disks": {}, **_recipe_doc(entry)})
        doc.setdefault("disks", {})[env] = disk.digest
        if disk.rootfs is not None:
            doc |= {"rootfs": disk.rootfs.digest, "packages": dict(disk.rootfs.packages)}
    return out


def _recipe_doc(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    if entry and "file" in entry:
        return {"file": entry["file"]}
    recipe = rootfs.Recipe.from_entry(entry)
    return {"suite": recipe.suite, "mirror": recipe.mirror, "recipe_packages": list(recipe.packages)}


def ship_disk(host: Host, img: rootfs.DiskImage) -> rootfs.DiskImage:
    """The disk image as the host sees it (like ship_image: copied once by digest to a remote host)."""
    if host.is_local:
        return img

    def ship() -> rootfs.DiskImage:
        disk = f"disk{''.join(img.disk.suffixes) or '.raw'}"
        files = {disk: img.disk, "vmlinuz": img.kernel, **({"initrd.img": img.initrd} if img.initrd is not None else {})}
        there = _ship(host, img.digest, files, "guest disk image")
        return replace(img, disk=there[disk], kernel=there["vmlinuz"], initrd=there.get("initrd.img"))

    return _memoized(("shipped-disk", host.name, img.digest), ship)


def disk_catalog(img: rootfs.DiskImage, env: str, params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The guest kernel catalog of a disk-image trial: like guest_catalog, each entry booting the disk."""
    base = f"{image.DEFAULT_CMDLINE.replace('console=ttyS0', CONSOLES[env])} {rootfs.ROOT_CMDLINE.replace('/dev/vda', ROOT_DEVICES[env])}"
    entry = {"kernel": str(img.kernel), "initrd": str(img.initrd or "")}
    catalog = {"default": {**entry, "cmdline": base}, "nopvspin": {**entry, "cmdline": f"{base} nopvspin"}}
    spec = params.get("guest_kernel_spec")
    if spec:
        catalog[str(params["guest_kernel"])] = {**entry, "cmdline": f"{base} {spec.get('cmdline', '')}".strip()}
    return catalog


def _make_overlays(host: Host, base: Path, names: Sequence[str]) -> list[str]:
    """One copy-on-write overlay of `base` per guest in rootfs.OVERLAY_DIR on the host; their paths."""
    paths = [f"{rootfs.OVERLAY_DIR}/{n}" for n in names]
    fmt = "qcow2" if base.suffix == ".qcow2" else "raw"
    script = f"mkdir -p {rootfs.OVERLAY_DIR} && " + " && ".join(
        shlex.join(rootfs.overlay_argv(str(base), p, fmt)) for p in paths)
    made = host.run(["sh", "-c", script], timeout=120)
    if not made.ok:
        raise ProvisionError(f"{host.name}: cannot create guest disk overlays in {rootfs.OVERLAY_DIR} (needs qemu-img, package qemu-utils): {made.tail()}")
    return paths


def _container_image(host: Host, campaign: str, files: Mapping[str, Path], base: rootfs.RootFS | None = None) -> str:
    h = hashlib.sha256(b"container busybox\n" if base is None else f"container rootfs {base.digest}\n".encode())
    for guest_path, local in sorted(files.items()):
        h.update(f"{guest_path}\n".encode() + hashlib.sha256(Path(local).read_bytes()).digest())
    name = container.image_name(campaign, h.hexdigest())

    def build() -> str:
        if container.image_exists(host, name):
            return name
        if base is None:
            return container.build_image(host, name, files=files)
        return container.build_image(host, name, archive=base.tar, files=files)

    return _memoized(("container", host.name, name), build)


def _accel(host: Host, img: image.GuestImage, log_dir: str) -> str:
    """The accelerator of this host: "kvm" if a KVM guest really boots, else "tcg" (probed once)."""
    return _memoized(("accel", host.name), lambda: libvirt.probe_accel(host, str(img.kernel), str(img.initrd), probe_timeout_s(), log_dir=log_dir))


def host_topology(host: Host) -> Topology:
    """The host's CPU topology, read through its Host once per process."""
    def read() -> Topology:
        return parse_topology_dump(host.run(["sh", "-c", TOPOLOGY_SCRIPT], timeout=30).stdout, host.name)

    return _memoized(("topology", host.name), read)


# ------------------------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Network:
    """A hypervisor host's guest network (inventory vars runner_guest_bridge, runner_guest_subnet)."""

    bridge: str = libvirt.BRIDGE
    subnet: str = libvirt.SUBNET


@dataclass(frozen=True)
class _Backend:
    """How to start, reach and stop one kind of guest on a hypervisor host."""

    start: Callable[[Host, GuestSpec, Network, str], None]
    destroy: Callable[[Host, str], None]
    leftovers: Callable[[Host, str], list[str]]  # (host, campaign) -> names of that campaign's guests there
    destroy_argv: Callable[[Host, str], list[str]]
    # (host, guest names) -> name -> vCPU -> schedstat, in one round trip for all guests
    schedstats: Callable[[Host, Sequence[str]], Mapping[str, Mapping[int, tuple[int, int, int]]]] | None = None
    pins: Callable[[Host, str], tuple[tuple[int, ...], ...]] | None = None


def _libvirt_start(host: Host, spec: GuestSpec, net: Network, logs: str) -> None:
    libvirt.start(host, spec, bridge=net.bridge, log_dir=logs)


def _xl_start(host: Host, spec: GuestSpec, net: Network, logs: str) -> None:
    xen.start(host, spec, bridge=net.bridge, log_dir=logs)


def _no_start(host: Host, spec: GuestSpec, net: Network, logs: str) -> None:
    """Containers are started by _boot (they need the image)."""


_LIBVIRT = _Backend(
    start=_libvirt_start,
    destroy=libvirt.destroy,
    leftovers=libvirt.list_campaign,
    destroy_argv=lambda host, name: libvirt.destroy_argv(name),
    schedstats=libvirt.vcpu_schedstats,
    pins=libvirt.vcpu_pins,
)
_XL = _Backend(
    start=_xl_start,
    destroy=xen.destroy,
    leftovers=lambda host, campaign: [n for n in xen.xl_domains(host) if n.startswith(f"rnr-{campaign_slug(campaign)}-")],
    destroy_argv=lambda host, name: xen.xl_destroy_argv(name),
)
_CONTAINER = _Backend(
    start=_no_start,
    destroy=container.remove,
    leftovers=container.list_campaign,
    destroy_argv=lambda host, name: container.remove_argv(container.container_cli(host), name),
)
_BACKENDS = {"kvm": _LIBVIRT, "xen-hvm": _XL, "xen-pvh": _XL, "xen-pv": _XL, "container": _CONTAINER}


# -------------------------------------------------------------------------------------------- boots


@dataclass
class Boot:
    """The k running guests (or containers) of one configuration on one hypervisor host."""

    env: str
    key: str
    boot_id: str
    hypervisor: Host
    specs: list[GuestSpec]
    guests: list[Host]
    ready_s: list[float]
    accel: str
    guard: Spawned
    net: Network
    image: tuple[str, str] = ("minimal", "")  # guest image catalog name, content digest
    facts: list[dict[str, Any]] = field(default_factory=list)
    prepared: set[str] = field(default_factory=set)
    trials: int = 0  # trials served so far

    def alive(self) -> bool:
        """Every guest still answers (a cheap command over its kept connection)."""
        try:
            return all(g.run(["true"], timeout=20).ok for g in self.guests)
        except HostError:
            return False


_boots: dict[str, Boot] = {}  # hypervisor host name -> its running guests (one configuration at a time)
_boots_lock = threading.Lock()

_GUARD_SCRIPT = 'read -r line; [ "$line" = done ] && exit 0; eval "$1"; exit 0'


def _guard(host: Host, cleanup: Sequence[Sequence[str]]) -> Spawned:
    """A dead man's switch on the hypervisor host: runs `cleanup` unless told "done" on its stdin."""
    script = "; ".join(shlex.join([*argv]) + " >/dev/null 2>&1" for argv in cleanup)
    return host.spawn(["sh", "-c", _GUARD_SCRIPT, "runner-guard", script])


def _network(ctx: WorkloadContext) -> Network:
    net = ctx.extra.get("guest_network") or {}
    return Network(net.get("bridge") or libvirt.BRIDGE, net.get("subnet") or libvirt.SUBNET)


def _provide(env: str, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext) -> Boot:
    """The running guests for this trial: the host's current boot if it has this configuration and is
    alive, else a new boot (the previous one is destroyed first: a host runs one configuration at a time)."""
    campaign = str(ctx.extra.get("campaign", "campaign"))
    gp = guest_params(env, params, ctx.cpus)
    key = guest_config_key(env, {**gp, **{k: params.get(k) for k in ("guest_kernel_spec", "guest_image", "guest_image_spec")}}, campaign)
    with _boots_lock:
        boot = _boots.get(host.name)
    if boot is not None and (boot.key != key or not boot.alive()):
        release(host.name)
        boot = None
    if boot is None:
        boot = _boot(env, host, plugin, params, ctx, gp, key)
        with _boots_lock:
            _boots[host.name] = boot
    return boot


def _boot(env: str, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext,
          gp: Mapping[str, Any], key: str) -> Boot:
    campaign = str(ctx.extra.get("campaign", "campaign"))
    backend = _BACKENDS[env]
    cache = _cache_dir()
    files = _guest_files(plugin, cache)
    net = _network(ctx)
    logs = str(cache / "logs" / campaign_slug(campaign)) if host.is_local else libvirt.LOG_DIR
    topo = host_topology(host)
    if env == "kvm":
        libvirt.ensure_libvirtd(host)
    for name in backend.leftovers(host, campaign):  # a killed attempt's or another worker's guests
        backend.destroy(host, name)
    image_name, image_entry = image_choice(params)
    if env == "container":
        base = None if image_name == "minimal" else _rootfs(cache, image_entry)
        img_name = _container_image(host, campaign, files, base)
        specs = [describe_guest("container", gp, topo, {}, campaign, i) for i in range(gp["vms"])]
        cli = container.container_cli(host)
        guard = _guard(host, [backend.destroy_argv(host, s.name) for s in specs])
        t0 = time.monotonic()
        try:
            for spec in specs:
                container.start(host, img_name, name=spec.name, cpuset=spec.host_cpus, memory_mib=spec.memory_mib)
        except BaseException:
            _destroy_all(host, backend, specs, guard)
            raise
        ready = [time.monotonic() - t0] * len(specs)
        guests: list[Host] = [ContainerHost(host, s.name, cli) for s in specs]
        boot = Boot(env, key, uuid.uuid4().hex[:12], host, specs, guests, ready, "none", guard, net,
                    image=(image_name, img_name.rsplit(":", 1)[-1].split("-", 1)[0]))
    else:
        accel = _accel(host, ship_image(host, _guest_image(cache, files, "kvm")), logs) if env == "kvm" else "xen"
        boot_id = uuid.uuid4().hex[:12]
        disks: list[str | None] = [None] * gp["vms"]
        if image_name == "minimal":
            built: image.GuestImage | rootfs.DiskImage = _guest_image(cache, files, env, params)
            catalog = guest_catalog(ship_image(host, built), env, params)
        else:
            built = disk_image(cache, files, env, params)
            shipped = ship_disk(host, built)
            catalog = disk_catalog(shipped, env, params)
            disks = list(_make_overlays(host, shipped.disk, [rootfs.overlay_name(campaign_slug(campaign), i, boot_id) for i in range(gp["vms"])]))
        specs = [describe_guest(env, {**gp, "accel": accel, **({"disk": disks[i]} if disks[i] else {})}, topo, catalog, campaign, i,
                                address=libvirt.guest_address(i, net.subnet))
                 for i in range(gp["vms"])]
        libvirt.ensure_bridge(host, net.bridge, net.subnet)
        guard = _guard(host, [backend.destroy_argv(host, s.name) for s in specs] + [["rm", "-f", d] for d in disks if d])
        try:
            starts = []
            for spec in specs:
                backend.start(host, spec, net, logs)
                starts.append(time.monotonic())
            ready = _in_parallel([_ready_waiter(host, s, net, t0, logs) for s, t0 in zip(specs, starts, strict=True)])
            known = _known_hosts(cache / f"known_hosts.{os.getpid()}.{host.name}", specs, net, built.host_key)
            guests = [
                SSHHost(HostSpec(name=s.name, address=libvirt.guest_address(s.index, net.subnet).split("/")[0],
                                 key_file=built.key_path, known_hosts=known, connect_timeout=30.0), via=host)
                for s in specs
            ]
        except BaseException as exc:
            _annotate(exc, {"accel": accel, "guest_json": specs[0].to_json()})
            _destroy_all(host, backend, specs, guard)
            raise
        boot = Boot(env, key, boot_id, host, specs, guests, ready, accel, guard, net, image=(image_name, built.digest))
    try:
        boot.facts = _in_parallel([_facts_reader(boot, i) for i in range(len(specs))])
    except BaseException:
        _release_boot(boot, raise_errors=False)
        raise
    return boot


def _ready_waiter(host: Host, spec: GuestSpec, net: Network, started: float, logs: str) -> Callable[[], float]:
    def wait() -> float:
        try:
            libvirt.wait_ssh(host, libvirt.guest_address(spec.index, net.subnet), max(1.0, boot_timeout_s() - (time.monotonic() - started)))
        except ProvisionError as exc:
            tail = libvirt.console_tail(host, xen.console_log(spec.name, spec.env) if spec.env.startswith("xen-") else f"{logs}/{spec.name}.log")
            raise ProvisionError(f"guest vm {spec.index} ({spec.name}) on {host.name}: {exc}; console: {tail or '(empty)'}") from None
        return time.monotonic() - started

    return wait


def _facts_reader(boot: Boot, i: int) -> Callable[[], dict[str, Any]]:
    backend = _BACKENDS[boot.env]

    def read() -> dict[str, Any]:
        guest = boot.guests[i]
        try:
            facts = parse_guest_facts(guest.run(["sh", "-c", FACTS_SCRIPT], timeout=60).stdout)
        except HostError as exc:
            _guest_lost(boot.hypervisor, boot.specs[i], exc)
        if backend.pins is not None:
            with contextlib.suppress(ProvisionError):
                facts["pins_applied"] = [list(p) for p in backend.pins(boot.hypervisor, boot.specs[i].name)]
        return facts

    return read


def _known_hosts(path: Path, specs: Sequence[GuestSpec], net: Network, host_key: str) -> Path:
    """The guests' known_hosts: their addresses with the image's host key (pinned, never learnt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{libvirt.guest_address(s.index, net.subnet).split('/')[0]} {host_key}\n" for s in specs))
    return path


def _destroy_all(host: Host, backend: _Backend, specs: Sequence[GuestSpec], guard: Spawned) -> list[str]:
    errors = []
    for spec in specs:
        try:
            backend.destroy(host, spec.name)
            if spec.disk and spec.disk.startswith(f"{rootfs.OVERLAY_DIR}/"):
                gone = host.run(["rm", "-f", spec.disk], timeout=60)
                if not gone.ok:
                    errors.append(f"guest {spec.name}: cannot remove its disk overlay {spec.disk}: {gone.tail()}")
        except (ProvisionError, HostError) as exc:
            errors.append(f"guest {spec.name}: {exc}")
    # Not clean: the guard runs its cleanup on the host now (and again, harmlessly, on what is gone).
    guard.finish("" if errors else "done\n", timeout=120)
    return errors


def _release_boot(boot: Boot, *, raise_errors: bool) -> None:
    for guest in boot.guests:
        with contextlib.suppress(Exception):
            guest.close()
    errors = _destroy_all(boot.hypervisor, _BACKENDS[boot.env], boot.specs, boot.guard)
    if boot.env != "container":
        with contextlib.suppress(ProvisionError, HostError):
            libvirt.remove_bridge(boot.hypervisor, boot.net.bridge)
    if errors and raise_errors:
        raise ProvisionError(f"cannot destroy {errors[0]}")


def release(host_name: str, *, raise_errors: bool = False) -> None:
    """Destroy the guests this process keeps on a hypervisor host (no-op if none)."""
    with _boots_lock:
        boot = _boots.pop(host_name, None)
    if boot is not None:
        _release_boot(boot, raise_errors=raise_errors)


def forget(host_name: str) -> None:
    """The hypervisor host failed: drop its boot without talking to it (its dead man's switch cleans up
    when the connection is gone)."""
    with _boots_lock:
        boot = _boots.pop(host_name, None)
    if boot is not None:
        for guest in boot.guests:
            with contextlib.suppress(Exception):
                guest.close()


def release_all(campaign: str | None = None) -> int:
    """Destroy every boot this process keeps (of `campaign` only, if given); returns how many."""
    with _boots_lock:
        names = [n for n, b in _boots.items() if campaign is None or b.specs[0].campaign == campaign]
    for name in names:
        with contextlib.suppress(Exception):
            release(name)
    return len(names)


register_guests(forget, release_all)


# ------------------------------------------------------------------------------------- running


def _in_parallel(fns: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the functions in one thread each; return their results, or raise the most telling error."""
    with ThreadPoolExecutor(max_workers=len(fns)) as pool:
        futures = [pool.submit(fn) for fn in fns]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0]
    return [f.result() for f in futures]


def _at_barrier(jobs: Sequence[Callable[[threading.Barrier], Any]], action: Callable[[], None] | None = None) -> list[Any]:
    """Run one job per guest; each calls barrier.wait() right before its workload, so all start together.

    `action` runs once, when every job has arrived and before any is released."""
    barrier = threading.Barrier(len(jobs), action=action, timeout=BARRIER_TIMEOUT_S)

    def guarded(job: Callable[[threading.Barrier], Any]) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return job(barrier)
            except BaseException:
                barrier.abort()  # the others must not wait for a job that will never arrive
                raise

        return run

    return _in_parallel([guarded(j) for j in jobs])


def _prepare(boot: Boot, plugin: Workload, ctx: WorkloadContext) -> None:
    """The workload's prepare() once per boot on every guest (in parallel)."""
    if plugin.name in boot.prepared:
        return

    def one(i: int) -> Callable[[], None]:
        def run() -> None:
            guest = boot.guests[i]
            gctx = WorkloadContext(host=guest.name, workdir=GUEST_WORKDIR, cpus=boot.specs[i].vcpus, extra={**ctx.extra, "vm": i})
            try:
                mk = guest.run(["mkdir", "-p", GUEST_WORKDIR], timeout=30)
                if not mk.ok:
                    raise ProvisionError(f"guest vm {i}: cannot create {GUEST_WORKDIR}: {mk.tail()}")
                plugin.prepare(guest, gctx)
            except HostError as exc:
                _guest_lost(boot.hypervisor, boot.specs[i], exc)

        return run

    _in_parallel([one(i) for i in range(len(boot.guests))])
    boot.prepared.add(plugin.name)


def _run_in_guests(env: str, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    boot = _provide(env, host, plugin, params, ctx)
    try:
        _prepare(boot, plugin, ctx)
        # The matrix's probes read the hypervisor host (side host; schedstat watches the guests' vCPU
        # threads by their names) around the guests' run, and inside every guest (side guest, its rows with
        # the guest's vm) around its own run: _run_workload.
        with probe_window(host, ctx, "host", [spec.name for spec in boot.specs]) as probed:
            outcome = _run_workload(boot, plugin, params, ctx, timeout)
        outcome = with_probes(outcome, probed)
    except BaseException as exc:
        _annotate(exc, _trial_fields(boot))
        release(host.name)
        raise
    boot.trials += 1
    if outcome.status != "ok" or not ctx.extra.get("keep_guests"):
        release(host.name, raise_errors=outcome.status == "ok")
    return outcome


def _trial_fields(boot: Boot) -> dict[str, Any]:
    spec = boot.specs[0]
    return {
        "accel": boot.accel,
        "guest_json": spec.to_json(),
        "extra": {
            "boot_id": boot.boot_id,
            "boot_s": max(boot.ready_s) if boot.trials == 0 else None,
            "guest_kernel": spec.guest_kernel or None,
            "guest_image": boot.image[0],
            "guest_image_digest": boot.image[1] or None,
            "guest_vcpus": spec.vcpus,
            "guest_pins": json.dumps([list(p) for p in spec.vcpu_pins]),
            "guest_cmdline": spec.cmdline or None,
            "guest_facts_json": json.dumps(boot.facts, sort_keys=True, separators=(",", ":")),
        },
    }


def _run_workload(boot: Boot, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    backend = _BACKENDS[boot.env]
    host, specs, guests = boot.hypervisor, boot.specs, boot.guests
    sched: dict[str, dict[int, Mapping[int, tuple[int, int, int]]]] = {"before": {}, "after": {}}

    def snapshot(when: str) -> None:
        if backend.schedstats is None:
            return
        with contextlib.suppress(ProvisionError, HostError, OSError, ValueError):
            stats = backend.schedstats(host, [spec.name for spec in specs])
            sched[when] = {spec.index: stats[spec.name] for spec in specs if spec.name in stats}

    window = window_plan(plugin, params, len(specs), timeout)
    run_params = params if window is None else window[1]
    run_id = uuid.uuid4().hex[:12]  # names this run to its stop command (a stale stop never reaches a later run)
    probed: dict[int, ProbeWindow] = {}  # vm -> the probes read inside that guest
    scope = _probe_scope(boot)

    def job(spec: GuestSpec, guest: Host) -> Callable[[threading.Barrier], tuple[CommandResult, str, str, float, float]]:
        gctx = WorkloadContext(host=guest.name, workdir=GUEST_WORKDIR, cpus=spec.vcpus,
                               extra={**ctx.extra, "vm": spec.index, "run_id": run_id})
        argv = plugin.command(run_params, gctx)

        def run(barrier: threading.Barrier) -> tuple[CommandResult, str, str, float, float]:
            try:
                # The probes inside the guest start before the barrier (the start is outside every
                # guest's measurement) and stop after the guest's run; they never fail the trial.
                with probe_window(guest, gctx, "guest", vm=spec.index, owner=host.name, where=scope) as probed[spec.index]:
                    stat0 = guest.run(["cat", "/proc/stat"], timeout=60).stdout
                    barrier.wait()
                    t0 = time.time()
                    result = guest.run(argv, timeout=timeout, cwd=GUEST_WORKDIR)
                    t1 = time.time()
                    finished()
                    stat1 = guest.run(["cat", "/proc/stat"], timeout=60).stdout
            except HostError as exc:
                _guest_lost(host, spec, exc)
            return result, stat0, stat1, t0, t1

        return run

    # The host-side snapshots run beside the guests' own reads, not after them: on a remote host each is
    # a round trip. "before" is taken while the guests read /proc/stat and is waited for at the barrier;
    # "after" starts when the last guest's workload ends.
    before = threading.Thread(target=snapshot, args=("before",), daemon=True)
    after = threading.Thread(target=snapshot, args=("after",), daemon=True)
    left = [len(specs)]
    left_lock = threading.Lock()

    def finished() -> None:
        with left_lock:
            left[0] -= 1
            if left[0] == 0:
                after.start()

    released = threading.Event()

    def release() -> None:
        before.join()
        released.set()

    stopper, done = None, threading.Event()
    if window is not None:
        stopper = threading.Thread(target=_stop_together, args=(plugin, guests, specs, run_id, window[0], released, done),
                                   daemon=True)
        stopper.start()
    before.start()
    try:
        runs = _at_barrier([job(s, g) for s, g in zip(specs, guests, strict=True)], action=release)
    finally:
        released.set()
        done.set()
    if stopper is not None:
        stopper.join(timeout=STOP_TIMEOUT_S + 10)  # a stop still in flight must not reach the next trial
    if after.ident is not None:  # started by the last guest to finish
        after.join(timeout=30)
    w_start, w_end, overlaps = common_window([(r[3], r[4]) for r in runs])
    fields = _trial_fields(boot)
    fields["extra"] |= {"window_start": w_start, "window_end": w_end}
    outcomes, telemetry = [], []
    for spec, (result, stat0, stat1, _t0, _t1), ready_s, overlap in zip(specs, runs, boot.ready_s, overlaps, strict=True):
        outcomes.append(finish(plugin, params, f"{host.name} vm {spec.index} ({spec.name})", result, timeout))
        b, a = sched["before"].get(spec.index), sched["after"].get(spec.index)
        telemetry.append({
            "ssh_ready_s": ready_s if boot.trials == 0 and boot.env != "container" else None,
            # Null, not a measured 0, where the guest kernel has no steal clock (TCG): its facts lack steal_time.
            "guest_steal_pct": _or_none(lambda s0=stat0, s1=stat1: steal_pct(s0, s1)) if _has_steal_clock(boot, spec.index) else None,
            "vcpu_run_delay_s": run_delay_s(b, a) if b is not None and a is not None else None,
            "window_overlap": overlap if len(specs) > 1 else None,
        })
    outcome = merge_outcomes(outcomes, telemetry, **fields)
    for spec in specs:  # the rows read inside each guest, with its vm (side guest)
        if spec.index in probed:
            outcome = with_probes(outcome, probed[spec.index], vm=spec.index)
    return outcome


def _probe_scope(boot: Boot) -> str:
    """How probe notes name the guests of a boot; also the scope of one availability check inside them (the
    guests of one environment, guest kernel and image on one hypervisor host answer alike)."""
    kernel = boot.specs[0].guest_kernel if boot.specs else ""
    what = ", ".join(x for x in (f"kernel {kernel}" if kernel else "", f"image {boot.image[0]}") if x)
    return f"{boot.env} guests ({what}) of {boot.hypervisor.name}"


def _has_steal_clock(boot: Boot, index: int) -> bool:
    facts = boot.facts[index] if index < len(boot.facts) else {}
    return "steal_time" in facts.get("pv_features", [])


def _annotate(exc: BaseException, fields: Mapping[str, Any]) -> None:
    """Give a failure what the trial record needs to say which guests it concerned (accel, guest_json and
    the boot's fields): the worker records them with the failed attempt."""
    if getattr(exc, "trial_fields", None) is None:
        with contextlib.suppress(AttributeError):
            exc.trial_fields = dict(fields)  # type: ignore[attr-defined]


def _stop_together(plugin: Workload, guests: Sequence[Host], specs: Sequence[GuestSpec], run_id: str, seconds: float,
                   released: threading.Event, done: threading.Event) -> None:
    """`seconds` after the barrier released the guests, end every guest's measurement at one instant
    (unless every run has ended by then: `done`).

    Each guest's stop command is started before the instant and waits for one line on its stdin: what
    is left at the instant is one write per guest, not a command start inside a guest (which takes
    seconds in a busy software-emulated guest). Closing stdin without the line ends it unused."""
    armed: list[Spawned] = []
    for guest, spec in zip(guests, specs, strict=True):
        argv = plugin.stop_argv(WorkloadContext(host=guest.name, workdir=GUEST_WORKDIR, cpus=spec.vcpus,
                                                extra={"run_id": run_id}))
        if argv:
            with contextlib.suppress(HostError):
                armed.append(guest.spawn(["sh", "-c", 'read -r _ || exit 0; exec "$@"', "runner-stop", *argv]))
    if not armed:
        return
    go = released.wait(BARRIER_TIMEOUT_S + 60) and not done.wait(seconds)
    gate = threading.Barrier(len(armed))

    def stop(stopper: Spawned) -> Callable[[], None]:
        def run() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait(timeout=10)
            stopper.finish("go\n" if go else "", timeout=STOP_TIMEOUT_S)

        return run

    with contextlib.suppress(Exception):
        _in_parallel([stop(a) for a in armed])


def _guest_lost(host: Host, spec: GuestSpec, exc: HostError) -> NoReturn:
    """A guest's connection broke: a HostError of the hypervisor host if that is what went (the runner then
    drops the host), else a ProvisionError naming the guest and its host (the trial fails)."""
    host.run(["true"], timeout=15)  # raises HostError when the hypervisor host itself is gone
    raise ProvisionError(f"guest vm {spec.index} ({spec.name}) on {host.name}: {exc}") from None


def _or_none(fn: Callable[[], float | None]) -> float | None:
    try:
        return fn()
    except (ProvisionError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------------- environments


@register("container")
def run_in_container(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    """The workload in `vms` containers (default 1) on the trial's CPU set, started together."""
    return _run_in_guests("container", host, plugin, params, ctx, timeout)


@register("kvm")
def run_in_kvm(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    """The workload in `vms` libvirt guests (KVM where it really boots a guest, else TCG)."""
    return _run_in_guests("kvm", host, plugin, params, ctx, timeout)


def _run_in_xen(env: str, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    """The workload in `vms` Xen guests created with xl on the host's dom0."""
    if host.run(["sh", "-c", "command -v xl"], timeout=30).rc != 0:
        raise ProvisionError(f"{host.name}: {env} needs a Xen dom0 with xl; this host has none")
    return _run_in_guests(env, host, plugin, params, ctx, timeout)


@register("xen-hvm")
def run_in_xen_hvm(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    return _run_in_xen("xen-hvm", host, plugin, params, ctx, timeout)


@register("xen-pvh")
def run_in_xen_pvh(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    return _run_in_xen("xen-pvh", host, plugin, params, ctx, timeout)


@register("xen-pv")
def run_in_xen_pv(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    return _run_in_xen("xen-pv", host, plugin, params, ctx, timeout)
