"""The controller: plan a campaign, run its trials on its hosts through Dask, record every attempt.

Each host is an exclusive resource: the controller keeps at most one attempt in flight per host, and Dask
runs them in parallel across hosts. Results are written by the controller as they arrive, so a killed
controller loses at most the attempts that were running; `launch` on the same matrix resumes.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import __version__
from runner.errors import HostError, RunnerError, UsageError
from runner.execution.worker import AttemptSpec, execute, host_cpus, kill_running
from runner.matrix.load import Matrix
from runner.records.store import AttemptRecord, CampaignStore
from runner.trials import Trial, axis_types, plan
from runner.workloads import base

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Progress:
    """What the progress display shows; the controller updates it, a view renders it."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    running: dict[str, str] = field(default_factory=dict)  # host -> trial label
    started: float = field(default_factory=time.monotonic)
    estimate_s: float = 0.0
    messages: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed


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

    @property
    def success(self) -> bool:
        return self.failed == 0 and not self.interrupted


def resolve_hosts(matrix: Matrix, inventory: str | Path | None = None) -> list[Any]:
    """HostSpecs of the matrix's host group, read through Ansible's inventory loading."""
    from runner.provision.inventory import load_inventory

    path = inventory or matrix.inventory
    if path is None:
        beside = matrix.path.parent / "inventory"
        path = beside if beside.exists() else PROJECT_ROOT / "inventory"
    return load_inventory(Path(path)).resolve(matrix.hosts)


def workdir_for(matrix: Matrix, spec: Any) -> str:
    base_dir = getattr(spec, "workdir", None) or "/var/tmp/runner"
    return f"{base_dir}/{matrix.campaign}/{spec.name}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def collect_facts(spec: Any) -> dict[str, Any]:
    """Facts of one host: its fingerprint where the collector runs, at least its CPU count."""
    from runner.provision.inventory import connect

    host = connect(spec)
    try:
        facts: dict[str, Any] = {"host": spec.name, "cpus": host_cpus(host)}
        try:
            from runner.provision.fingerprint import collect_on

            facts.update(collect_on(host))
        except ImportError:
            pass
        return facts
    finally:
        host.close()


def launch(
    matrix: Matrix,
    *,
    datasets: Path,
    hosts: Sequence[Any],
    scheduler: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    command_line: Sequence[str] = (),
) -> Summary:
    """Run (or resume) a campaign. Raises RunnerError for problems found before any trial runs."""
    store = CampaignStore(Path(datasets) / matrix.campaign)
    store.acquire()
    try:
        return _launch_locked(matrix, store, hosts, scheduler, on_progress, command_line)
    finally:
        store.release()


def _launch_locked(
    matrix: Matrix,
    store: CampaignStore,
    specs: Sequence[Any],
    scheduler: str | None,
    on_progress: Callable[[Progress], None] | None,
    command_line: Sequence[str],
) -> Summary:
    started = time.monotonic()
    # Facts first: the CPU count of each host resolves relative values like "50%".
    facts: dict[str, dict[str, Any]] = {}
    dead: dict[str, str] = {}
    for spec in specs:
        try:
            facts[spec.name] = collect_facts(spec)
        except HostError as exc:
            dead[spec.name] = str(exc)
    live = [s for s in specs if s.name not in dead]
    if not live and matrix.placement == "pool":
        raise HostError(f"no host of {matrix.hosts!r} is reachable: " + "; ".join(dead.values()))
    cpus = {name: f["cpus"] for name, f in facts.items()}
    if matrix.placement == "each":
        for name in dead:  # plan its trials anyway (from earlier facts if any) to record them as failed
            earlier = store.host_facts().get(name, {}) if store.meta_path.exists() else {}
            cpus[name] = earlier.get("cpus") or next(iter(cpus.values()), 1)
    trials = plan(matrix, cpus)
    types = axis_types(trials, list(matrix.axes))
    provenance = {
        "campaign": matrix.campaign,
        "runner_version": __version__,
        "git_commit": git_commit(),
        "command": list(command_line),
        "controller": socket.gethostname(),
        "python": sys.version.split()[0],
        "matrix_file": str(matrix.path),
        "matrix_sha256": matrix.sha256,
        "hosts_group": matrix.hosts,
        "placement": matrix.placement,
        "order": matrix.order,
        "seed": matrix.seed,
        "dead_hosts": dead,
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
    for name, f in facts.items():
        store.write_host_facts(name, f)

    recorded = store.recorded()
    todo = [(t, recorded[t.trial_id].attempts + 1 if t.trial_id in recorded else 1) for t in trials]
    todo = [(t, a) for t, a in todo if not (t.trial_id in recorded and recorded[t.trial_id].ok)]
    # A trial that already used up its attempts in an earlier launch gets the policy's attempts again.
    progress = Progress(total=len(trials), skipped=len(trials) - len(todo))
    plugin = base.get(matrix.workload)
    progress.estimate_s = sum(plugin.estimate_seconds(t.param_dict) for t, _ in todo) / max(1, len(live))

    runner = _Dispatch(matrix, store, types, live, dead, progress, on_progress)
    interrupted = False
    previous = signal.getsignal(signal.SIGTERM)
    if threading_is_main():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        runner.run(todo, scheduler)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if threading_is_main():
            signal.signal(signal.SIGTERM, previous)
    return Summary(
        campaign=matrix.campaign,
        dataset=store.root,
        planned=len(trials),
        skipped=progress.skipped,
        ok=progress.done,
        failed=progress.failed,
        attempts=runner.attempts,
        elapsed_s=time.monotonic() - started,
        interrupted=interrupted,
        failures=tuple(runner.failures),
        dead_hosts=tuple(sorted(set(dead) | runner.dead)),
    )


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _Dispatch:
    """Keeps one attempt in flight per live host; retries per policy; records every attempt."""

    def __init__(
        self,
        matrix: Matrix,
        store: CampaignStore,
        types: Mapping[str, str],
        live: Sequence[Any],
        dead: Mapping[str, str],
        progress: Progress,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.matrix = matrix
        self.store = store
        self.types = types
        self.specs = {s.name: s for s in live}
        self.dead_reasons = dict(dead)
        self.dead: set[str] = set()
        self.progress = progress
        self.notify = on_progress or (lambda p: None)
        self.attempts = 0
        self.failures: list[str] = []

    def run(self, todo: Sequence[tuple[Trial, int]], scheduler: str | None) -> None:
        if self.matrix.placement == "each":
            queues = {name: collections.deque() for name in {*self.specs, *self.dead_reasons}}
            for trial, attempt in todo:
                queues[trial.host].append((trial, attempt))
        else:
            queues = {None: collections.deque(todo)}
        # Trials of hosts found dead at the start are recorded as failed, with the reason, without running.
        for name, reason in self.dead_reasons.items():
            for trial, attempt in queues.pop(name, ()):
                self._record_unrun(trial, attempt, name, reason)
        if not any(queues.values()):
            return
        from runner.execution.cluster import client_for

        with client_for(scheduler, n_hosts=len(self.specs)) as client:
            try:
                self._loop(client, queues)
            except KeyboardInterrupt:
                self.progress.messages.append("interrupted: stopping running workloads")
                self.notify(self.progress)
                _stop_everything(client)
                raise

    def _loop(self, client: Any, queues: dict[Any, collections.deque]) -> None:
        from distributed import wait

        inflight: dict[Any, tuple[Trial, int, str]] = {}
        busy: set[str] = set()
        workers = sorted(client.scheduler_info().get("workers", {}))
        preferred = {name: workers[i % len(workers)] for i, name in enumerate(sorted(self.specs))} if workers else {}
        self.notify(self.progress)
        while True:
            for name in sorted(self.specs):
                if name in busy or name in self.dead:
                    continue
                queue = queues.get(name if self.matrix.placement == "each" else None)
                if not queue:
                    continue
                trial, attempt = queue.popleft()
                spec = AttemptSpec(trial, attempt, self.specs[name], self.matrix.timeout, workdir_for(self.matrix, self.specs[name]))
                future = client.submit(
                    execute,
                    spec,
                    key=f"trial-{self.matrix.campaign}-{trial.trial_id}-a{attempt}-{os.getpid()}-{time.monotonic_ns()}",
                    pure=False,
                    retries=0,
                    workers=[preferred[name]] if name in preferred else None,
                    allow_other_workers=True,
                )
                inflight[future] = (trial, attempt, name)
                busy.add(name)
                self.progress.running[name] = trial.label()
            if not inflight:
                break
            self.notify(self.progress)
            try:
                done, _ = wait(list(inflight), return_when="FIRST_COMPLETED", timeout=1.0)
            except TimeoutError:  # nothing finished within a second: refresh the display and wait again
                done = set()
            for future in done:
                trial, attempt, name = inflight.pop(future)
                busy.discard(name)
                self.progress.running.pop(name, None)
                try:
                    rec = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the trial's worker died repeatedly
                    rec = _failure(trial, attempt, name, f"{name}: Dask could not run the trial: {type(exc).__name__}: {exc}", "failed")
                self._handle(rec, trial, attempt, name, queues)
            if not done:
                self.notify(self.progress)
        # Hosts that died leave trials behind (placement each): record them as failed.
        for key, queue in queues.items():
            while queue:
                trial, attempt = queue.popleft()
                host = key or "pool"
                self._record_unrun(trial, attempt, host, self.dead_reasons.get(host, "no live host left to run it"))

    def _handle(self, rec: AttemptRecord, trial: Trial, attempt: int, name: str, queues: dict[Any, collections.deque]) -> None:
        self.store.write_attempt(self.matrix.campaign, self.matrix.workload, self.types, rec)
        self.attempts += 1
        if rec.status == "ok":
            self.progress.done += 1
            self.notify(self.progress)
            return
        if rec.failure_kind == "host":
            self.dead.add(name)
            self.dead_reasons[name] = rec.error or "unreachable"
            self.progress.messages.append(f"host {name} dropped: {rec.error}")
        queue_key = name if self.matrix.placement == "each" else None
        retry = attempt < self.matrix.retry.attempts and rec.failure_kind in self.matrix.retry.on
        if retry and not (queue_key is not None and name in self.dead) and len(self.dead) < len(self.specs):
            self.progress.retried += 1
            queues[queue_key].appendleft((trial, attempt + 1))
        else:
            self.progress.failed += 1
            self.failures.append(f"{trial.trial_id} ({trial.label()}): {rec.error}")
        self.notify(self.progress)

    def _record_unrun(self, trial: Trial, attempt: int, host: str, reason: str) -> None:
        rec = _failure(trial, attempt, host, f"{host}: not run: {reason}", "host")
        self.store.write_attempt(self.matrix.campaign, self.matrix.workload, self.types, rec)
        self.attempts += 1
        self.progress.failed += 1
        self.failures.append(f"{trial.trial_id} ({trial.label()}): {rec.error}")
        self.notify(self.progress)


def _failure(trial: Trial, attempt: int, host: str, error: str, kind: str) -> AttemptRecord:
    now = time.time()
    return AttemptRecord(
        trial_id=trial.trial_id,
        cell_id=trial.cell_id,
        repetition=trial.repetition,
        attempt=attempt,
        host=host,
        status="failed",
        error=error,
        started_at=now,
        ended_at=now,
        wall_s=0.0,
        workload_wall_s=None,
        params=trial.param_dict,
        env=str(trial.param_dict.get("env", "host")),
        accel=None,
        failure_kind=kind,
    )


def _stop_everything(client: Any) -> None:
    try:
        client.run(kill_running, wait=True)
    except Exception:  # noqa: BLE001 - best effort while shutting down
        pass


def check_usable(matrix: Matrix) -> None:
    plugin = base.get(matrix.workload)
    if (why := plugin.missing()) is not None:
        raise UsageError(f"workload {matrix.workload!r} cannot run here: {why}")


__all__ = ["Progress", "RunnerError", "Summary", "launch", "resolve_hosts"]
