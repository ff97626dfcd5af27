"""Running a trial in its environment (the `env` parameter; what each environment is and does:
runner.provision.environments).

`host` runs the workload directly on the trial's host. The environments that start guests or containers
are run by runner.execution.guests, which registers itself when imported (the worker does on its first
guest trial): it provides hosts (guests, containers) on the trial's host and runs the workload in them.

`get(env)` gives the runner of an environment: `run(host, plugin, trial_params, ctx, timeout) -> Outcome`. It raises HostError when the host
itself fails (the runner may drop the host), ProvisionError when the environment cannot be set up, and
TrialError for a workload failure it detected; a timeout or non-zero exit is returned as an Outcome.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner import defaults
from runner.errors import HostError, UnknownNameError
from runner.execution.killed import killed_for_memory
from runner.hosts.base import Host
from runner.probes import base as probe_base
from runner.probes import session as probe_session
from runner.probes.base import ProbeContext
from runner.provision import environments as envs
from runner.trials import Trial, trial_guest_key
from runner.workloads.base import Workload, WorkloadContext
from runner.records.metric import Metric


@dataclass(frozen=True)
class Outcome:
    status: str  # ok | failed | timeout
    error: str | None = None
    metrics: tuple[Metric, ...] = ()
    workload_wall_s: float | None = None
    accel: str | None = "none"
    guest_json: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # one-line reports for the progress display (probes unavailable or failing)


Runner = Callable[[Host, Workload, Mapping[str, Any], WorkloadContext, float], Outcome]
GuestRunner = Callable[[envs.Environment, Host, Workload, Mapping[str, Any], WorkloadContext, float], Outcome]
_guest_runners: list[GuestRunner] = []  # runner.execution.guests, once imported


def get(name: str) -> Runner:
    """The runner of environment `name` (UnknownNameError if there is none)."""
    environment = envs.get(name)
    if not environment.starts_guests:
        return run_on_host
    if not _guest_runners:
        raise UnknownNameError(f"environment {name!r} is not available; known: {defaults.ENV}")
    return functools.partial(_guest_runners[0], environment)


def environment(name: str) -> envs.Environment:
    """What environment `name` is (runner.provision.environments)."""
    return envs.get(name)


def starts_guests(name: str) -> bool:
    """True if trials in environment `name` run in guests or containers it starts."""
    return envs.get(name).starts_guests


def setup_seconds(params: Mapping[str, Any], boot_s: Mapping[str, float] | None = None) -> float:
    """Rough seconds to start a trial's guests or containers (k guests boot at once, roughly k times the work).
    `boot_s`: the host's own seconds per guest boot by environment (inventory runner_boot_s), where known."""
    env = envs.get(str(params.get("env", defaults.ENV)))
    if boot_s and env.name in boot_s and env.starts_guests:
        vms = int(params.get("vms", defaults.VMS)) if env.virtual_machines else 1
        return float(boot_s[env.name]) * vms
    return env.setup_seconds(params)


def estimate_seconds(plugin: Workload, params: Mapping[str, Any]) -> float:
    """A trial's rough wall time when it boots its own guests: the workload's estimate plus the set-up."""
    return plugin.estimate_seconds(params) + setup_seconds(params)


def trial_seconds(plugin: Workload, trial: Trial, previous: Trial | None, reuse: str,
                  boot_s: Mapping[str, float] | None = None, trial_s: float = 0.0) -> float:
    """Rough wall time of `trial` on a host whose trial before it was `previous`: the workload's estimate,
    the host's own cost of a trial beyond its workload (`trial_s`: inventory runner_trial_s), and a boot
    when its guests are not kept from the previous trial (guests.reuse)."""
    total = plugin.estimate_seconds(trial.param_dict) + trial_s
    key = trial_guest_key(trial)
    if key is not None and (reuse == "trial" or previous is None or trial_guest_key(previous) != key):
        total += setup_seconds(trial.param_dict, boot_s)
    return total


def estimate_trials(plugin: Workload, trials: Sequence[Trial], reuse: str) -> float:
    """Rough wall time of trials run in this order on one host: workloads plus one set-up per boot."""
    total, last = 0.0, None
    for t in trials:
        total += trial_seconds(plugin, t, last, reuse)
        last = t
    return total


def host_cost(plugin: Workload, reuse: str, specs: Mapping[str, Any]) -> Callable[[str, Trial, Trial | None], float]:
    """`cost(host, trial, previous)` for placement.makespan: trial_seconds with each host's runner_boot_s and
    runner_trial_s (HostSpec.boot_s, trial_s) where the inventory gives them."""
    def cost(host: str, trial: Trial, previous: Trial | None) -> float:
        spec = specs.get(host)
        boot = dict(getattr(spec, "boot_s", ()) or ())
        return trial_seconds(plugin, trial, previous, reuse, boot, getattr(spec, "trial_s", None) or 0.0)
    return cost


def prepare_once(host: Host, plugin: Workload, ctx: WorkloadContext, cache: set[tuple[str, ...]], key: tuple[str, ...]) -> None:
    """Create the campaign's work directory and let the workload prepare it, once per worker process."""
    if key in cache:
        return
    mk = host.run(["mkdir", "-p", ctx.workdir], timeout=30)
    if not mk.ok:
        raise HostError(f"{host.name}: cannot create {ctx.workdir}: {mk.stderr.strip()}")
    plugin.prepare(host, ctx)
    cache.add(key)


def finish(plugin: Workload, params: Mapping[str, Any], host_name: str, result: Any, timeout: float, *,
           oom_kills: int | None = None, **fields: Any) -> Outcome:
    """Turn a finished workload command into an Outcome (timeout, exit status, parsed metrics). `oom_kills`:
    how many processes the OOM killer ended in the workload's memory cgroup during the run (None: not known),
    so that a SIGKILL is called "out of memory" only when it was (runner.execution.killed)."""
    if result.timed_out:
        return Outcome("timeout", f"{host_name}: trial ran past its timeout of {timeout:g} s and was stopped", workload_wall_s=result.wall_s, **fields)
    if result.rc != 0:
        tail = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or ["no output"])[-1]
        if (killed := killed_for_memory(result.rc, params, result.stderr, oom_kills)) is not None:  # 137: say why, not "no output"
            return Outcome("failed", f"{host_name}: workload {killed}", workload_wall_s=result.wall_s, **fields)
        return Outcome("failed", f"{host_name}: workload exited with status {result.rc}: {tail[:300]}", workload_wall_s=result.wall_s, **fields)
    return Outcome("ok", None, tuple(plugin.parse(result, params)), result.wall_s, **fields)


_prepared: set[tuple[str, ...]] = set()


def run_on_host(host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext, timeout: float) -> Outcome:
    prepare_once(host, plugin, ctx, _prepared, (ctx.workdir, host.name, plugin.name))
    argv = plugin.command(params, ctx)
    with probe_window(host, ctx) as probed:
        result = host.run(argv, timeout=timeout, cwd=ctx.workdir)
    return with_probes(finish(plugin, params, host.name, result, timeout), probed)


def probe_window(host: Host, ctx: WorkloadContext, side: str = "host", processes: Sequence[str] = (), *,
                 vm: int | None = None, owner: str | None = None, where: str | None = None) -> probe_session.ProbeWindow:
    """The matrix's probes (ctx.extra["probes"]) around a workload command on `host`: `side` host (the
    trial's host, or a guest's hypervisor host, whose `processes` are the guests' names) or guest (`host` is
    guest `vm`; `owner` its hypervisor host and `where` its configuration, checked once for all its guests:
    ProbeWindow). A probe that reads only on the host side (kvm_exits, host_state) is left out inside a
    guest without a note: it runs on the hypervisor host."""
    names = tuple(ctx.extra.get("probes") or ())
    if side != "host":
        names = tuple(n for n in names if side in probe_base.get(n).sides)
    part = side if vm is None else f"{side}{vm}"
    pctx = ProbeContext(host=host.name, side=side, workdir=ctx.workdir, scratch=probe_session.scratch_dir(ctx.workdir),
                        tag=f"{ctx.extra.get('trial_id', 'trial')}.{ctx.extra.get('attempt', 1)}.{part}", processes=tuple(processes))
    return probe_session.ProbeWindow(host, names, pctx, owner=owner, where=where)


def with_probes(outcome: Outcome, probed: probe_session.ProbeWindow, vm: int | None = None) -> Outcome:
    """The outcome with the probes' rows and notes added (the workload's own result is kept as it is); `vm`:
    the rows were read inside that guest (their `vm` column, like the guest's own per-VM rows)."""
    if not probed.metrics and not probed.notes:
        return outcome
    rows = probed.metrics if vm is None else tuple(dataclasses.replace(m, vm=vm) for m in probed.metrics)
    return dataclasses.replace(outcome, metrics=outcome.metrics + rows, notes=outcome.notes + probed.notes)


def forget_host(name: str) -> None:
    """After a host failure: prepare again on the next trial (the host may have been reinstalled), and
    forget its guests (their connections went with the host; its dead man's switch destroys them)."""
    _prepared.difference_update({k for k in _prepared if k[1] == name})
    probe_session.forget_host(name)
    for release in _releasers:
        release(name)


_releasers: list[Callable[..., Any]] = []  # per-host release of kept guests, registered by guest environments
_release_alls: list[Callable[..., int]] = []


def register_guests(run: GuestRunner, release_host: Callable[[str], None], release_all: Callable[[str | None], int]) -> None:
    """The guest runner registers how it runs a trial, how it drops a host's kept guests and all of them."""
    _guest_runners.append(run)
    _releasers.append(release_host)
    _release_alls.append(release_all)


def release_guests(campaign: str | None = None) -> int:
    """Destroy the guests kept for reuse in this process (of `campaign` only, if given)."""
    return sum(release_all(campaign) for release_all in _release_alls)
