"""Guest environments: `container`, `kvm` (libvirt, KVM or TCG), `xen-hvm` and `xen-pv` (xl).

Each is an environment runner (see runner.execution.environments for the contract). For one trial it:
1. builds, once per worker process and cached on disk by content, what the guest needs: the workload's
   payload (`payload`: a static lockbench; nothing for `command`), then a container image or a guest
   image (kernel + initramfs with the campaign's SSH key);
2. describes the trial's `vms` guests with `guest.describe_guest` (all on the SAME host CPUs:
   over-commit) and starts them; a dead man's switch process (`_Guard`) destroys them if this worker
   process dies (Ctrl-C of the controller, a killed Dask worker) before it does so itself;
3. waits until every guest answers on SSH, then starts the workload in all guests at once (a barrier:
   one thread per guest, released together), and reads telemetry around it;
4. returns per-guest metrics (`vm` = guest index) and totals (`vm` null): `throughput` and
   `aggregate_throughput` (sum over guests), `vm_jain` (Jain's index of the guests' throughputs),
   `vms`, guest steal time and host-side vCPU run delay; and always destroys the guests (try/finally),
   removing the guest bridge when no guest is left on it.

Guests run on the local host only for now; a remote host is refused with a ProvisionError. The trial's
`timeout` bounds the workload; booting has its own limit, BOOT_TIMEOUT_S (env RUNNER_GUEST_BOOT_TIMEOUT).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runner.errors import HostError, ProvisionError
from runner.execution.environments import Outcome, finish, register
from runner.execution.hosts import CommandResult, Host, LocalHost
from runner.provision import container, image, libvirt, xen
from runner.provision.guest import GuestSpec, describe_guest
from runner.provision.topology import read_topology
from runner.workloads.base import Metric, Workload, WorkloadContext
from runner.workloads.lockbench.parse import jain

GUEST_WORKDIR = "/opt/runner"  # where the payload lives inside a guest or container
DEFAULT_MEMORY_MIB = 512
BOOT_TIMEOUT_S = float(os.environ.get("RUNNER_GUEST_BOOT_TIMEOUT", "240"))
PROBE_TIMEOUT_S = 15.0
BARRIER_TIMEOUT_S = 120.0
LOCK_PATH = Path("/var/tmp/runner/guests.lock")  # serialises bridge creation/removal with guest starts
CONSOLES = {"kvm": "console=ttyS0", "xen-hvm": "console=ttyS0", "xen-pv": "console=hvc0"}


@dataclass(frozen=True)
class Payload:
    """What a workload needs inside a guest: files (guest path -> host file) and its working directory."""

    files: Mapping[str, Path]
    workdir: str


# ------------------------------------------------------------------------------------------ pure parts


def guest_params(env: str, params: Mapping[str, Any], host_cpus: int) -> dict[str, Any]:
    """The `describe_guest` parameters of a trial: vcpus (default: all host CPUs), memory (default
    DEFAULT_MEMORY_MIB), vms (default 1), pin and guest_numa if given, guest_kernel (default "default")."""
    out: dict[str, Any] = {
        "vcpus": params.get("vcpus", host_cpus),
        "memory": params.get("memory", DEFAULT_MEMORY_MIB),
        "vms": params.get("vms", 1),
    }
    out |= {k: params[k] for k in ("pin", "guest_numa") if k in params}
    if env != "container":
        out["guest_kernel"] = params.get("guest_kernel", "default")
    return out


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


def combine(per_vm: Sequence[Sequence[Metric]], telemetry: Sequence[Mapping[str, float | None]]) -> list[Metric]:
    """Per-guest metrics (relabelled vm = i), per-guest telemetry, then the totals across guests (vm null).

    telemetry[i] may hold `ssh_ready_s`, `guest_steal_pct`, `vcpu_run_delay_s` (None: not available)."""
    units = {"ssh_ready_s": ("s", False), "guest_steal_pct": ("%", False), "vcpu_run_delay_s": ("s", False)}
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
    totals = {"ssh_ready_s": max, "guest_steal_pct": lambda v: sum(v) / len(v), "vcpu_run_delay_s": sum}
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


# ------------------------------------------------------------------------------ payloads and images


def payload(plugin: Workload, cache: Path) -> Payload:
    """Build (once) what `plugin` needs inside a guest. lockbench: a static binary; command: nothing."""
    if plugin.name == "command":
        return Payload({}, "/tmp")
    if plugin.name == "lockbench":
        from runner.workloads.lockbench import binary_name, source_path

        binary = cache / f"{binary_name()}-static"
        if not binary.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f"{binary.name}.{os.getpid()}.tmp"
            argv = ["cc", "-O2", "-pthread", "-static", "-o", str(tmp), str(source_path())]
            built = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
            if built.returncode:
                why = (built.stderr.strip().splitlines() or ["no output"])[-1]
                raise ProvisionError(f"cannot build a static lockbench for guests (cc -static; needs libc6-dev): {why}")
            os.replace(tmp, binary)
        return Payload({f"{GUEST_WORKDIR}/{binary_name()}": binary}, GUEST_WORKDIR)
    raise ProvisionError(f"workload {plugin.name!r} cannot run in a guest or container yet; supported: command, lockbench")


_memo: dict[tuple[Any, ...], Any] = {}
_memo_lock = threading.Lock()


def _memoized(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    with _memo_lock:
        if key not in _memo:
            _memo[key] = make()
        return _memo[key]


def _cache_dir(ctx: WorkloadContext) -> Path:
    return Path(ctx.workdir) / "guest"


def _guest_image(cache: Path, pay: Payload, env: str, params: Mapping[str, Any] | None = None) -> image.GuestImage:
    """The guest image (kernel + initramfs) for the trial: the host's kernel, or the matrix's guest_kernels entry."""
    nets = image.NET_MODULES if env == "kvm" else image.NET_MODULES + image.XEN_NET_MODULES
    key = image.campaign_keypair(cache / "keys")
    spec = (params or {}).get("guest_kernel_spec") or {}
    kernel = Path(spec["kernel"]) if spec.get("kernel") else None
    if kernel is not None and not kernel.is_file():
        raise ProvisionError(f"guest kernel {params['guest_kernel']!r}: {kernel} does not exist on this host")
    return _memoized(("image", str(cache), tuple(sorted(pay.files.items())), nets, str(kernel)),
                     lambda: image.build_image(cache / "images", key_path=key, extra_files=pay.files, net_modules=nets, kernel=kernel))


def _container_image(campaign: str, pay: Payload) -> str:
    h = hashlib.sha256(f"container {shutil.which('busybox')}\n".encode())
    for guest_path, host_path in sorted(pay.files.items()):
        h.update(f"{guest_path}\n".encode() + hashlib.sha256(Path(host_path).read_bytes()).digest())
    name = container.image_name(campaign, h.hexdigest())

    def build() -> str:
        return name if container.image_exists(name) else container.build_image(name, files=pay.files)

    return _memoized(("container", name), build)


def _accel(host: Host, img: image.GuestImage, log_dir: Path) -> str:
    """The accelerator of this host: "kvm" if a KVM guest really boots, else "tcg" (probed once)."""
    return _memoized(("accel", host.name), lambda: libvirt.probe_accel(img, PROBE_TIMEOUT_S, log_dir=log_dir))


# ----------------------------------------------------------------------------- guest lifecycle helpers


def _require_local(host: Host, env: str) -> None:
    if not isinstance(host, LocalHost):
        raise ProvisionError(f"{host.name}: {env} env on remote hosts is not supported yet; run {env} trials on the local host")


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_GUARD_CODE = (
    "import json, subprocess, sys\n"
    "if sys.stdin.read() != 'done':\n"
    "    for argv in json.loads(sys.argv[1]):\n"
    "        subprocess.run(argv, capture_output=True, timeout=120, check=False)\n"
)


class _Guard:
    """A dead man's switch: a detached process that runs the cleanup commands unless told 'done'.

    Threads of a dying process run no `finally`; the guard sees its stdin close and cleans up instead."""

    def __init__(self, cleanup: Sequence[Sequence[str]]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _GUARD_CODE, json.dumps([list(a) for a in cleanup])],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )

    def release(self, *, clean: bool) -> None:
        """clean=True: everything is gone, the guard exits; False: the guard runs its cleanup now."""
        try:
            self._proc.communicate("done" if clean else "", timeout=180)
        except subprocess.TimeoutExpired:
            self._proc.kill()


@dataclass(frozen=True)
class _Backend:
    """How to start and stop one kind of guest on this machine."""

    start: Callable[[GuestSpec, Path], None]
    destroy: Callable[[str], None]
    destroy_argv: Callable[[str], list[str]]
    schedstats: Callable[[str], Mapping[int, tuple[int, int, int]]] | None


def _libvirt_start(spec: GuestSpec, log_dir: Path) -> None:
    libvirt.start(spec, bridge=libvirt.BRIDGE, log_dir=log_dir)


_LIBVIRT = _Backend(
    start=_libvirt_start,
    destroy=libvirt.destroy,
    destroy_argv=lambda name: ["virsh", "-q", "-c", libvirt.URI, "destroy", name],
    schedstats=lambda name: libvirt.vcpu_schedstats(libvirt.qemu_pid(name)),
)


def _xl(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode:
        raise ProvisionError(f"{' '.join(argv[:2])} failed: {' '.join((proc.stderr or proc.stdout).split())}")
    return proc.stdout


def xl_domains() -> list[str]:
    """Names of the Xen domains of this dom0 (`xl list`), Domain-0 excluded."""
    lines = _xl(["xl", "list"]).splitlines()[1:]
    return [line.split()[0] for line in lines if line.split() and line.split()[0] != "Domain-0"]


def _xl_start(spec: GuestSpec, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = log_dir / f"{spec.name}.cfg"
    cfg.write_text(xen.xl_config(spec, bridge=libvirt.BRIDGE))
    _xl(xen.xl_create_argv(cfg))


def xl_destroy(name: str) -> None:
    """Destroy Xen domain `name` (no-op if it does not exist)."""
    if name in xl_domains():
        _xl(xen.xl_destroy_argv(name))


_XL = _Backend(start=_xl_start, destroy=xl_destroy, destroy_argv=xen.xl_destroy_argv, schedstats=None)


def _known_hosts(path: Path, specs: Sequence[GuestSpec], host_key: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{libvirt.guest_address(s.index).split('/')[0]} {host_key}\n" for s in specs))
    return path


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


# ------------------------------------------------------------------------------------- environments


@register("container")
def run_in_container(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    """The workload in `vms` containers (default 1) on the trial's CPU set, started together."""
    _require_local(host, "container")
    campaign = str(ctx.extra.get("campaign", "campaign"))
    pay = payload(plugin, _cache_dir(ctx))
    img = _container_image(campaign, pay)
    gp = guest_params("container", params, ctx.cpus)
    specs = [describe_guest("container", gp, read_topology(), {}, campaign, i) for i in range(gp["vms"])]
    fields = {"accel": "none", "guest_json": specs[0].to_json()}
    guard = _Guard([container.remove_argv(s.name) for s in specs])

    def job(spec: GuestSpec) -> Callable[[threading.Barrier], CommandResult]:
        gctx = WorkloadContext(host=spec.name, workdir=pay.workdir, cpus=spec.vcpus, extra={**ctx.extra, "vm": spec.index})
        argv = container.run_argv(img, plugin.command(params, gctx), name=spec.name, cpuset=spec.host_cpus,
                                  memory_mib=spec.memory_mib, workdir=pay.workdir)

        def run(barrier: threading.Barrier) -> CommandResult:
            barrier.wait()
            return host.run(argv, timeout=timeout)

        return run

    try:
        for spec in specs:
            container.remove(spec.name)  # a leftover of a killed attempt of this very trial
        results = _at_barrier([job(s) for s in specs])
    except BaseException:
        _remove_containers(specs, guard, raise_errors=False)
        raise
    _remove_containers(specs, guard, raise_errors=True)
    outcomes = [finish(plugin, params, f"{host.name} container {s.name}", r, timeout) for s, r in zip(specs, results, strict=True)]
    return merge_outcomes(outcomes, [{} for _ in specs], **fields)


def _remove_containers(specs: Sequence[GuestSpec], guard: _Guard, *, raise_errors: bool) -> None:
    errors = []
    for spec in specs:
        try:
            container.remove(spec.name)
        except ProvisionError as exc:
            errors.append(str(exc))
    guard.release(clean=not errors)
    if errors and raise_errors:
        raise ProvisionError(f"cannot remove container: {errors[0]}")


@register("kvm")
def run_in_kvm(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    """The workload in `vms` libvirt guests (KVM where it really boots a guest, else TCG)."""
    _require_local(host, "kvm")
    libvirt.ensure_libvirtd()
    cache = _cache_dir(ctx)
    pay = payload(plugin, cache)
    img = _guest_image(cache, pay, "kvm", params)
    accel = _accel(host, _guest_image(cache, pay, "kvm"), cache / "logs")
    return _run_guests(_LIBVIRT, "kvm", accel, img, pay, host, plugin, params, ctx, timeout)


def _run_in_xen(env: str, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    """The workload in `vms` Xen guests created with xl. Never run by this project: no Xen host here."""
    if host.run(["sh", "-c", "command -v xl"], timeout=30).rc != 0:
        raise ProvisionError(f"{host.name}: {env} needs a Xen dom0 with xl; this host has none")
    _require_local(host, env)
    cache = _cache_dir(ctx)
    pay = payload(plugin, cache)
    img = _guest_image(cache, pay, env, params)
    return _run_guests(_XL, env, "xen", img, pay, host, plugin, params, ctx, timeout)


@register("xen-hvm")
def run_in_xen_hvm(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    return _run_in_xen("xen-hvm", host, plugin, params, ctx, timeout)


@register("xen-pv")
def run_in_xen_pv(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    return _run_in_xen("xen-pv", host, plugin, params, ctx, timeout)


def _run_guests(
    backend: _Backend, env: str, accel: str, img: image.GuestImage, pay: Payload,
    host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float,
) -> Outcome:
    from runner.execution.ssh import HostSpec, SSHHost

    campaign = str(ctx.extra.get("campaign", "campaign"))
    cache = _cache_dir(ctx)
    gp = {**guest_params(env, params, ctx.cpus), "accel": accel}
    topo = read_topology()
    catalog = guest_catalog(img, env, params)
    specs = [describe_guest(env, gp, topo, catalog, campaign, i, address=libvirt.guest_address(i)) for i in range(gp["vms"])]
    fields = {"accel": accel, "guest_json": specs[0].to_json()}
    known = _known_hosts(cache / f"known_hosts.{os.getpid()}", specs, img.host_key)
    guests = [
        SSHHost(HostSpec(name=s.name, address=libvirt.guest_address(s.index).split("/")[0], key_file=img.key_path,
                         known_hosts=known, connect_timeout=30.0))
        for s in specs
    ]
    guard = _Guard([backend.destroy_argv(s.name) for s in specs])
    try:
        with _host_lock():
            libvirt.ensure_bridge()
            starts = []
            for spec in specs:
                backend.destroy(spec.name)  # a leftover of a killed attempt of this very trial
                backend.start(spec, cache / "logs")
                starts.append(time.monotonic())
        ready = _in_parallel([_ready_waiter(s, t0, cache / "logs") for s, t0 in zip(specs, starts, strict=True)])
        outcome = _run_workload(backend, specs, guests, ready, pay, host, plugin, params, ctx, timeout, fields)
    except BaseException:
        _teardown(backend, specs, guests, guard, raise_errors=False)
        raise
    _teardown(backend, specs, guests, guard, raise_errors=True)
    return outcome


def _ready_waiter(spec: GuestSpec, started: float, log_dir: Path) -> Callable[[], float]:
    def wait() -> float:
        try:
            libvirt.wait_ssh(libvirt.guest_address(spec.index), max(1.0, BOOT_TIMEOUT_S - (time.monotonic() - started)))
        except ProvisionError as exc:
            raise ProvisionError(f"guest vm {spec.index} ({spec.name}): {exc}; console log {log_dir / spec.name}.log") from None
        return time.monotonic() - started

    return wait


def _run_workload(
    backend: _Backend, specs: Sequence[GuestSpec], guests: Sequence[Host], ready: Sequence[float], pay: Payload,
    host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float, fields: Mapping[str, Any],
) -> Outcome:
    sched: dict[str, dict[int, Mapping[int, tuple[int, int, int]]]] = {"before": {}, "after": {}}

    def snapshot(when: str) -> None:
        if backend.schedstats is None:
            return
        for spec in specs:
            with contextlib.suppress(ProvisionError, OSError):
                sched[when][spec.index] = backend.schedstats(spec.name)

    def job(spec: GuestSpec, guest: Host) -> Callable[[threading.Barrier], tuple[CommandResult, str, str]]:
        gctx = WorkloadContext(host=spec.name, workdir=pay.workdir, cpus=spec.vcpus, extra={**ctx.extra, "vm": spec.index})
        argv = plugin.command(params, gctx)

        def run(barrier: threading.Barrier) -> tuple[CommandResult, str, str]:
            try:
                stat0 = guest.run(["cat", "/proc/stat"], timeout=60).stdout
                barrier.wait()
                result = guest.run(argv, timeout=timeout, cwd=pay.workdir)
                stat1 = guest.run(["cat", "/proc/stat"], timeout=60).stdout
            except HostError as exc:  # the guest, not the trial's host, is gone
                raise ProvisionError(f"guest vm {spec.index}: {exc}") from None
            return result, stat0, stat1

        return run

    runs = _at_barrier([job(s, g) for s, g in zip(specs, guests, strict=True)], action=lambda: snapshot("before"))
    snapshot("after")
    outcomes, telemetry = [], []
    for spec, (result, stat0, stat1), ready_s in zip(specs, runs, ready, strict=True):
        outcomes.append(finish(plugin, params, f"{host.name} vm {spec.index} ({spec.name})", result, timeout))
        b, a = sched["before"].get(spec.index), sched["after"].get(spec.index)
        telemetry.append({
            "ssh_ready_s": ready_s,
            "guest_steal_pct": _or_none(lambda s0=stat0, s1=stat1: steal_pct(s0, s1)),
            "vcpu_run_delay_s": run_delay_s(b, a) if b is not None and a is not None else None,
        })
    return merge_outcomes(outcomes, telemetry, **fields)


def _or_none(fn: Callable[[], float | None]) -> float | None:
    try:
        return fn()
    except (ProvisionError, ValueError, IndexError):
        return None


def _teardown(backend: _Backend, specs: Sequence[GuestSpec], guests: Sequence[Host], guard: _Guard, *, raise_errors: bool) -> None:
    """Close the SSH connections, destroy every guest, remove the bridge if no guest is left on it."""
    for guest in guests:
        with contextlib.suppress(Exception):
            guest.close()
    errors = []
    with _host_lock():
        for spec in specs:
            try:
                backend.destroy(spec.name)
            except ProvisionError as exc:
                errors.append(f"guest {spec.name}: {exc}")
        if not libvirt.bridge_ports():
            libvirt.remove_bridge()
    guard.release(clean=not errors)
    if errors and raise_errors:
        raise ProvisionError(f"cannot destroy {errors[0]}")
