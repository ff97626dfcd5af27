"""Launch a campaign: lock its dataset, take the facts and holds of its hosts, plan, record, run its trials
(runner.execution.dispatch) and sum it up. `launch` on the same matrix resumes: finished trials are kept.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner import __version__
from runner.errors import HostError
from runner.execution import environments
from runner.execution.canary import Canaries
from runner.execution.cluster import check_scheduler, warming
from runner.execution.dispatch import Dispatch, Progress
from runner.execution.facts import collect_all, describe_changes, fact_changes, facts_after
from runner.execution.images import prepare_images
from runner.execution.placement import EnvPlacement, Placement, makespan, trial_env
from runner.execution.preflight import PROJECT_ROOT, check_guests, inventory_path, place_hosts
from runner.execution.rounds import Rounds
from runner.lab.reservations import HoldSet, hold_hosts
from runner.matrix.load import Matrix
from runner.provision import kernelbuild
from runner.provision.tuning import load_tune_file
from runner.records.store import CampaignStore
from runner.trials import axis_types, plan
from runner.workloads import base


@dataclass(frozen=True)
class Summary:
    campaign: str
    dataset: Path
    planned: int
    skipped: int
    ok: int
    failed: int
    attempts: int
    elapsed_s: float
    interrupted: bool
    failures: tuple[str, ...]
    dead_hosts: tuple[str, ...]
    host_changes: tuple[str, ...] = ()  # 'tb1: kernel.release: 6.1 -> 6.2', facts that changed under the campaign
    lost_holds: tuple[str, ...] = ()  # 'host tb1: our hold for campaign c was lost; now ...': no trial started there after

    @property
    def success(self) -> bool:
        return self.failed == 0 and not self.interrupted


@dataclass
class LaunchContext:
    """What one launch works with, from the lock on its dataset to its summary."""

    matrix: Matrix
    store: CampaignStore
    scheduler: str | None  # an external Dask scheduler's address; None: a local cluster
    inventory: Path
    known_hosts: Path | None = None  # the file the hosts' specs were resolved with, for Ansible runs too
    on_progress: Callable[[Progress], None] | None = None
    command_line: Sequence[str] = ()
    notes: list[str] = field(default_factory=list)  # for the progress display, from before the first trial
    holds: HoldSet | None = None  # the campaign's holds on its hosts, once taken


def launch(
    matrix: Matrix,
    *,
    datasets: Path,
    hosts: Sequence[Any],
    scheduler: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    command_line: Sequence[str] = (),
    inventory: str | Path | None = None,
    known_hosts: str | Path | None = None,
) -> Summary:
    """Run (or resume) a campaign. Raises RunnerError for problems found before any trial runs.

    The campaign holds its live hosts for its whole life (runner.lab.reservations): a host held by
    another campaign is waited for or skipped, as the matrix's `hosts.busy` says. `known_hosts`: the file
    the hosts' specs were resolved with (resolve_hosts), for the Ansible runs of `provision:` too.
    """
    if scheduler:
        check_scheduler(scheduler)  # a wrong address is bad input: one line, before any host is touched
    store = CampaignStore(Path(datasets) / matrix.campaign)
    store.acquire()
    try:
        ctx = LaunchContext(matrix, store, scheduler, inventory_path(matrix, inventory),
                            Path(known_hosts).expanduser() if known_hosts else None, on_progress, tuple(command_line))
        with warming(scheduler, n_hosts=len(hosts)):  # the local cluster starts while facts and holds are taken
            return _launch_locked(ctx, hosts)
    finally:
        store.release()


def _launch_locked(ctx: LaunchContext, specs: Sequence[Any]) -> Summary:
    """Facts first (read-only): they find the hosts that are down, and the CPU counts that resolve "50%"; then
    the holds (their paths come with the specs: runner_hold_path, read by load_inventory)."""
    matrix, notes = ctx.matrix, ctx.notes
    facts, dead = collect_all(specs)
    live = [s for s in specs if s.name not in dead]
    with hold_hosts(
        live,
        None,
        matrix.campaign,
        wait=matrix.busy != "skip",
        timeout=matrix.busy_timeout,
        on_wait=lambda why: _notify_note(ctx.on_progress, why),
        on_lost=notes.append,
    ) as holds:
        held = [s for s in live if s.name in holds.held]
        notes += [f"host {name} skipped: held by another campaign" for name in sorted(holds.skipped)]
        if matrix.provision is not None and held:
            _provision(matrix, ctx.store, held, ctx.inventory, notes, ctx.known_hosts)
            facts, more_dead = collect_all(held)  # tuning may have changed them
            dead.update(more_dead)
            held = [s for s in held if s.name not in more_dead]
            for name in more_dead:
                holds.drop(name)
        ctx.holds = holds
        summary = _launch_held(ctx, held, facts, dead)
        for name in summary.dead_hosts:
            holds.abandon(name)
        return summary


def _notify_note(on_progress: Callable[[Progress], None] | None, note: str) -> None:
    if on_progress is not None:
        on_progress(Progress(total=0, messages=[note]))


def _provision(
    matrix: Matrix, store: CampaignStore, specs: Sequence[Any], inventory: Path, notes: list[str], known_hosts: Path | None = None,
) -> None:
    """The matrix's `provision:` step: Ansible fingerprint, tuning and workload build, before any trial."""
    from runner.provision.ansible import provision  # ansible_runner costs imports: only with `provision:`

    options = dict(matrix.provision or {})
    tune = None
    if options.get("tune"):
        tune = load_tune_file(matrix.path.parent / options["tune"])
    report = provision(
        ":".join(s.name for s in specs),
        inventory,
        store.root / "provision",
        tune=tune,
        prepare_vars={"runner_prepare_gmake": bool(options.get("gmake"))},
        known_hosts=known_hosts,
    )
    for host, changes in report.tuning_changes.items():
        if changes:
            notes.append(f"{host}: tuned: " + "; ".join(f"{c.path} {c.old!r} -> {c.new!r}" for c in changes[:3]))


def _restore(matrix: Matrix, store: CampaignStore, specs: Sequence[Any], inventory: Path, known_hosts: Path | None = None) -> None:
    """Put back what the campaign's tuning changed (the host_tuning role saved it on each host)."""
    from runner.provision.ansible import run_playbook  # ansible_runner costs imports: only with `provision:`

    run_playbook("restore.yml", inventory=inventory, limit=":".join(s.name for s in specs), private_data_root=store.root / "provision" / "ansible",
                 known_hosts=known_hosts)


def _launch_held(ctx: LaunchContext, live: Sequence[Any], facts: dict[str, dict[str, Any]], dead: dict[str, str]) -> Summary:
    """Plan, record and run the trials on the held hosts (`ctx.holds`: a host dropped mid-campaign is released
    then, not left to expire; each trial confirms the hold on its host in its own first command)."""
    matrix, store, inventory, notes, on_progress = ctx.matrix, ctx.store, ctx.inventory, ctx.notes, ctx.on_progress
    placement = Placement.of(matrix)
    started = time.monotonic()
    earlier = store.host_facts() if store.meta_path.exists() else {}
    if not live and not placement.per_host:
        raise HostError(f"no host of {matrix.hosts!r} is reachable: " + "; ".join(dead.values()))
    cpus = {s.name: facts[s.name]["cpus"] for s in live}
    if placement.per_host:
        for name in dead:  # plan its trials anyway (from earlier facts if any) to record them as failed
            cpus[name] = earlier.get(name, {}).get("cpus") or next(iter(cpus.values()), 1)
    trials = plan(matrix, cpus)
    check_guests(matrix, trials)
    # Each host takes only the environments it can run (its tools, its hypervisor, the inventory's runner_envs);
    # an environment no host can run ends the launch here, in one line.
    envs = place_hosts(live, {trial_env(t) for t in trials}, matrix.hosts)
    live = _placed(ctx, envs, live, notes)
    if placement.per_host:  # every host runs the matrix's trials of its own environments
        trials = [t for t in trials if t.host is None or envs.runs(str(t.host), trial_env(t))]
    kernelbuild.prepare_kernels([t.param_dict for t in trials], store.root, lambda line: print(f"runner: {line}", file=sys.stderr, flush=True),
                                inventory=inventory, known_hosts=ctx.known_hosts)
    # Disk and container images are built here, once, before any trial (a minute or two the first time).
    images = prepare_images(base.get(matrix.workload), [t.param_dict for t in trials],
                            progress=lambda line: print(f"runner: {line}", file=sys.stderr, flush=True))
    types = axis_types(trials, list(matrix.axes))
    provenance = {
        "campaign": matrix.campaign,
        "runner_version": __version__,
        "git_commit": git_commit(),
        "command": list(ctx.command_line),
        "controller": socket.gethostname(),
        "python": sys.version.split()[0],
        "matrix_file": str(matrix.path),
        "matrix_sha256": matrix.sha256,
        "hosts_group": matrix.hosts,
        "inventory": str(Path(inventory).resolve()),
        "placement": matrix.placement,
        "order": matrix.order,
        "seed": matrix.seed,
        "dead_hosts": dead,
        "guest_images": images,
        "repetitions": asdict(matrix.adaptive) if matrix.adaptive is not None else matrix.repetitions,
        "probes": list(matrix.probes),
        "canary": asdict(matrix.canary) if matrix.canary is not None else None,
    }
    store.initialise(
        campaign=matrix.campaign,
        workload=matrix.workload,
        matrix_text=matrix.text,
        matrix_sha256=matrix.sha256,
        axis_types=types,
        trial_count=len(trials),
        seed=matrix.seed,
        provenance=provenance,
    )
    notes += store.notes  # damaged records moved aside, measured again
    notes += [f"host {name} unreachable at start: {why}" for name, why in sorted(dead.items())]
    changes: dict[str, list[str]] = {}
    for name, f in sorted(facts.items()):
        if name in earlier and (diff := fact_changes(earlier[name], f)):
            changes[name] = diff
            notes.append(describe_changes(name, diff, "since the previous launch"))
        store.write_host_facts(name, f)

    recorded = store.recorded()
    rounds = Rounds(matrix, trials) if matrix.adaptive is not None else None
    if rounds is not None:  # repetitions earlier launches added are planned trials now; their values count
        trials = trials + rounds.resumed(recorded)
        rounds.load(store.read_table("metrics").to_pandas() if recorded else None)
    todo = [(t, recorded[t.trial_id].attempts + 1 if t.trial_id in recorded else 1) for t in trials]
    todo = [(t, a) for t, a in todo if not (t.trial_id in recorded and recorded[t.trial_id].ok)]
    if rounds is not None and not todo and (more := rounds.next_round()):  # resumed between two rounds
        trials, todo = trials + more, [(t, 1) for t in more]
        notes.append(rounds.describe(more))
    # A trial that already used up its attempts in an earlier launch gets the policy's attempts again.
    progress = Progress(total=len(trials), skipped=len(trials) - len(todo), messages=notes)
    plugin = base.get(matrix.workload)
    progress.estimate_s, _ = makespan([t for t, _ in todo], [s.name for s in live],
                                      environments.host_cost(plugin, matrix.reuse, {s.name: s for s in live}),
                                      runs=Placement.of(matrix).with_envs(envs).runs, per_host=placement.per_host,
                                      costs=progress.weights)
    progress.weight_mean = sum(progress.weights.values()) / len(progress.weights) if progress.weights else 0.0

    holds = ctx.holds
    runner = Dispatch(matrix, store, types, live, dead, progress, on_progress, holds and holds.drop, holds and holds.confirm,
                      holds and holds.trial_guard, envs=envs)
    runner.rounds = rounds
    if matrix.canary is not None:  # re-runs of the canary cell on each host (runner.execution.canary)
        runner.canaries = Canaries.start(matrix, cpus, recorded, store.read_table("trials").to_pandas() if recorded else None)
        progress.total += runner.canaries.recorded  # canary runs earlier launches made count as recorded trials
        progress.skipped += runner.canaries.recorded
        progress.messages.append(runner.canaries.describe())
    progress.round = rounds.round if rounds is not None else 0
    runner.notify(progress)  # the start: notes on unreachable or changed hosts show before any trial
    interrupted = False
    previous = signal.getsignal(signal.SIGTERM)
    if threading_is_main():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        runner.run(todo, ctx.scheduler)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if threading_is_main():
            signal.signal(signal.SIGTERM, previous)
    if rounds is not None:
        progress.messages.append(rounds.summary())
        runner.notify(progress)
    runner.sweep_holds()
    ours = [s for s in live if s.name not in runner.lost]  # a host whose hold was lost is someone else's now
    if matrix.provision and matrix.provision.get("tune") and ours:
        _restore(matrix, store, ours, inventory, ctx.known_hosts)
    lines = [describe_changes(n, c, "since the previous launch") for n, c in sorted(changes.items())]
    if not interrupted:
        lines += facts_after(store, [s for s in live if s.name not in runner.dead], facts, progress, on_progress)
    dead_now = {**dead, **{n: runner.dead_reasons[n] for n in runner.dead}}
    store.update_provenance(dead_hosts=dead_now, host_changes=lines, lost_holds=dict(runner.lost))
    return Summary(
        campaign=matrix.campaign,
        dataset=store.root,
        planned=progress.total,
        skipped=progress.skipped,
        ok=progress.done,
        failed=progress.failed,
        attempts=runner.attempts,
        elapsed_s=time.monotonic() - started,
        interrupted=interrupted,
        failures=tuple(runner.failures),
        dead_hosts=tuple(sorted(dead_now)),
        host_changes=tuple(lines),
        lost_holds=tuple(why for _, why in sorted(runner.lost.items())),
    )



def _placed(ctx: LaunchContext, envs: EnvPlacement, live: Sequence[Any], notes: list[str]) -> list[Any]:
    """The hosts that take trials: a host that runs none of the campaign's environments is left out (its hold
    released), with one line; where hosts differ in what they run, one line says which take which."""
    notes += list(envs.notes)
    for name, why in envs.left_out.items():
        notes.append(why)
        if ctx.holds is not None:
            ctx.holds.drop(name)
    kept = [s for s in live if s.name not in envs.left_out]
    if any(not envs.runs_all(s.name) for s in kept):
        notes.append("environments per host: " + "; ".join(f"{s.name}: {', '.join(envs.envs_of(s.name))}" for s in kept))
    return kept


def threading_is_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
