"""Running a trial's workload in guests: the guest environments' runner (container, kvm, qemu, xen-*).

An environment (runner.provision.environments) turns (hypervisor Host, the trial's guest configuration)
into k Hosts, one per guest or container, and the ordinary workload path runs on each of them. The
hypervisor Host is any Host: this machine or a lab host over SSH; a guest is an SSH host reached through a
channel its hypervisor host opens, so a guest network that only the hypervisor host sees is enough.

For one trial:
1. the boot registry (runner.execution.boots) gives the running guests of this configuration on the host,
   booting them if needed (images: runner.execution.images);
2. the workload is prepared once per boot on every guest (`Workload.prepare`, ctx.workdir = GUEST_WORKDIR);
3. the workload starts in all guests at once (a barrier: one thread per guest, released together), with
   telemetry read around it, and the common window (latest start to earliest end) and each guest's overlap
   with it are recorded;
4. per-guest metrics (`vm` = guest index) and the totals (`vm` null) the workload declares
   (`Workload.combine_vms`), guest steal time, host-side vCPU run delay and the boot that served the trial
   are returned (runner.execution.pervm).
Guests are kept for the next trial when the controller says one of the same configuration follows on
this host (`keep_guests`), and destroyed otherwise, after a failed or timed-out trial, when a trial with
another configuration arrives, on Ctrl-C and at the end of the campaign (`boots.release_all`).

The trial's `timeout` bounds the workload; booting has its own limit (boots.boot_timeout_s(), env RUNNER_GUEST_BOOT_TIMEOUT).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runner.errors import HostError, ProvisionError
from runner.execution import boots
from runner.execution.boots import Boot, guest_lost, provide
from runner.execution.environments import Outcome, finish, probe_window, register_guests, with_probes
from runner.execution.killed import SIGKILL_STATUSES
from runner.execution.pervm import common_window, merge_outcomes, run_delay_s, steal_pct
from runner.hosts.base import CommandResult, Host, Spawned
from runner.probes.session import ProbeWindow
from runner.provision import kernelfacts
from runner.provision.environments import Environment, annotate, in_parallel
from runner.provision.guest import GuestSpec
from runner.workloads.base import GUEST_WORKDIR, Workload, WorkloadContext

BARRIER_TIMEOUT_S = 120.0
WINDOW_SLACK_S = 20.0  # how much longer than its window a stoppable run is started (room for a slow start)
STOP_TIMEOUT_S = 20.0  # for the command that ends a guest's run at the common instant (window)


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

    return in_parallel([guarded(j) for j in jobs])


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
                guest_lost(boot.hypervisor, boot.specs[i], exc)

        return run

    in_parallel([one(i) for i in range(len(boot.guests))])
    boot.prepared.add(plugin.name)


def run_in_guests(environment: Environment, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext,
                  timeout: float) -> Outcome:
    """The workload in the trial's `vms` guests (or containers) of `environment` on `host`, started together."""
    boot = provide(environment, host, plugin, params, ctx)
    try:
        _prepare(boot, plugin, ctx)
        # The matrix's probes read the hypervisor host (side host; schedstat watches the guests' vCPU
        # threads by their names) around the guests' run, and inside every guest (side guest, its rows with
        # the guest's vm) around its own run: _run_workload.
        with probe_window(host, ctx, "host", [spec.name for spec in boot.specs]) as probed:
            outcome = _run_workload(boot, plugin, params, ctx, timeout)
        outcome = with_probes(outcome, probed)
    except BaseException as exc:
        annotate(exc, _trial_fields(boot))
        boots.release(host.name)
        raise
    boot.trials += 1
    if outcome.status != "ok" or not ctx.extra.get("keep_guests"):
        boots.release(host.name, raise_errors=outcome.status == "ok")
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
            **kernelfacts.trial_columns(boot.facts[0] if boot.facts else {}, spec.guest_kernel),
        },
    }


def _run_workload(boot: Boot, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    host, specs, guests = boot.hypervisor, boot.specs, boot.guests
    sched: dict[str, dict[int, Mapping[int, tuple[int, int, int]]]] = {"before": {}, "after": {}}

    def snapshot(when: str) -> None:
        with contextlib.suppress(ProvisionError, HostError, OSError, ValueError):
            stats = boot.env.schedstats(host, [spec.name for spec in specs])
            if stats is None:
                return
            sched[when] = {spec.index: stats[spec.name] for spec in specs if spec.name in stats}

    ooms_before: list[Mapping[str, int] | None] = [None]

    def before_run() -> None:
        snapshot("before")
        ooms_before[0] = _oom_kills(boot)

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
                guest_lost(host, spec, exc)
            return result, stat0, stat1, t0, t1

        return run

    # The host-side snapshots run beside the guests' own reads, not after them: on a remote host each is
    # a round trip. "before" (with the guests' OOM kill counters) is taken while the guests read /proc/stat
    # and is waited for at the barrier; "after" starts when the last guest's workload ends.
    before = threading.Thread(target=before_run, daemon=True)
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
    ooms = _oom_kills_during(boot, ooms_before[0], [r[0] for r in runs])
    outcomes, telemetry = [], []
    for spec, (result, stat0, stat1, _t0, _t1), ready_s, overlap in zip(specs, runs, boot.ready_s, overlaps, strict=True):
        outcomes.append(finish(plugin, params, f"{host.name} vm {spec.index} ({spec.name})", result, timeout,
                               oom_kills=ooms.get(spec.name)))
        b, a = sched["before"].get(spec.index), sched["after"].get(spec.index)
        telemetry.append({
            "ssh_ready_s": ready_s if boot.trials == 0 and boot.env.virtual_machines else None,
            # Null, not a measured 0, where the guest kernel has no steal clock (TCG): its facts lack steal_time.
            "guest_steal_pct": _or_none(lambda s0=stat0, s1=stat1: steal_pct(s0, s1)) if _has_steal_clock(boot, spec.index) else None,
            "vcpu_run_delay_s": run_delay_s(b, a) if b is not None and a is not None else None,
            "window_overlap": overlap if len(specs) > 1 else None,
        })
    outcome = merge_outcomes(outcomes, telemetry, plugin, **fields)
    for spec in specs:  # the rows read inside each guest, with its vm (side guest)
        if spec.index in probed:
            outcome = with_probes(outcome, probed[spec.index], vm=spec.index)
    return outcome


def _oom_kills(boot: Boot) -> Mapping[str, int] | None:
    """The OOM kill counters of the boot's guests (Environment.oom_kills), None if they cannot be read."""
    try:
        return boot.env.oom_kills(boot.hypervisor, [spec.name for spec in boot.specs])
    except (ProvisionError, HostError, OSError, ValueError):
        return None


def _oom_kills_during(boot: Boot, before: Mapping[str, int] | None, results: Sequence[CommandResult]) -> dict[str, int]:
    """Guest name -> processes the OOM killer ended in its memory cgroup during the run, for the guests whose
    counter was read before and after. Read again only when a workload ended by SIGKILL (what the count
    explains), while the guests and their cgroups still exist: they are removed after the outcome."""
    if before is None or not any(r.rc in SIGKILL_STATUSES and not r.timed_out for r in results):
        return {}
    after = _oom_kills(boot) or {}
    return {name: after[name] - before[name] for name in before.keys() & after.keys()}


def _probe_scope(boot: Boot) -> str:
    """How probe notes name the guests of a boot; also the scope of one availability check inside them (the
    guests of one environment, guest kernel and image on one hypervisor host answer alike)."""
    kernel = boot.specs[0].guest_kernel if boot.specs else ""
    what = ", ".join(x for x in (f"kernel {kernel}" if kernel else "", f"image {boot.image[0]}") if x)
    return f"{boot.env.name} guests ({what}) of {boot.hypervisor.name}"


def _has_steal_clock(boot: Boot, index: int) -> bool:
    facts = boot.facts[index] if index < len(boot.facts) else {}
    return "steal_time" in facts.get("pv_features", [])


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
        in_parallel([stop(a) for a in armed])


def _or_none(fn: Callable[[], float | None]) -> float | None:
    try:
        return fn()
    except (ProvisionError, ValueError, IndexError):
        return None


register_guests(run_in_guests, boots.forget, boots.release_all)
