"""The Dask loop of a campaign: keeps every live host busy, retries per policy, records every attempt.

Each host is an exclusive resource: the controller keeps at most two attempts in flight per host (the next
one waiting in the host's worker, _depth), and Dask runs them in parallel across hosts. Results are written
as they arrive (on one records thread), so a killed controller loses at most the attempts that were running.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner import defaults
from runner.errors import RunnerError
from runner.execution import environments
from runner.execution.canary import Canaries, probes_for
from runner.execution.cluster import SchedulerLost, client_for, stall_after_s, worker_addresses, worker_wait_s
from runner.execution.placement import EnvPlacement, Placement, trial_env, workdir_for
from runner.execution.rounds import Rounds
from runner.execution.stall import why_stalled
from runner.execution.worker import AttemptSpec, execute, kill_running, release_guests, warm
from runner.matrix.load import Matrix
from runner.records.store import AttemptRecord, CampaignStore
from runner.trials import Trial, trial_guest_key
from runner.util import one_line

CHURN_CHECK_S = 2.0  # with nothing finishing, look at the scheduler's workers this often
WARM_TIMEOUT_S = 5.0  # the longest the first trials wait for the workers' connections to every host (_loop)


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
    round: int = 0  # repetitions as bounds: the round running (1: the min repetitions of every cell)
    weights: dict[str, float] = field(default_factory=dict)  # trial_id -> estimated seconds, of the trials not finished
    weight_done: float = 0.0  # estimated seconds of the trials finished
    weight_mean: float = 0.0  # a trial the estimate did not cover (a canary run, a later round) counts as this

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed

    def finished(self, trial_id: str) -> None:
        """A trial ended for good (ok, or failed after its attempts): its estimate counts as done."""
        self.weight_done += self.weights.pop(trial_id, self.weight_mean)

    def eta_s(self, now: float | None = None) -> float:
        """Seconds left: the time so far scaled by the estimated work left over the estimated work done, so a
        campaign of short and long trials (bare host runs, guest boots) is not extrapolated from the short
        ones; by the count of trials where nothing was estimated; the estimate before any trial ended."""
        finished = self.done + self.failed
        if not finished:
            return self.estimate_s
        elapsed = (time.monotonic() if now is None else now) - self.started
        if self.weight_done <= 0:
            return elapsed / finished * self.remaining
        left = sum(self.weights.values()) + self.weight_mean * max(0, self.remaining - len(self.weights))
        return elapsed * left / self.weight_done


@dataclass
class _Flight:
    """What the Dask loop keeps while trials are in flight (Dispatch._loop)."""

    workers: list[str]  # the scheduler's workers at the last look
    preferred: dict[str, str]  # host -> the worker its trials name (preferred_workers)
    inflight: dict[Any, tuple[Trial, int, str]] = field(default_factory=dict)  # future -> (trial, attempt, host)
    sent: dict[Any, tuple[AttemptSpec, str | None]] = field(default_factory=dict)  # future -> what it runs, the worker it named
    per_host: dict[str, collections.deque] = field(default_factory=lambda: collections.defaultdict(collections.deque))  # oldest first
    suspects: set[Any] = field(default_factory=set)  # named to a worker that left, running nowhere at the last look
    checked: float = 0.0  # the last look at the workers
    quiet_since: float = 0.0  # the last trial sent or finished
    no_workers_since: float | None = None


class Dispatch:
    """Keeps a live host busy (two attempts in flight where the next may wait in the worker, else one: _depth);
    retries per policy; records every attempt."""

    def __init__(
        self,
        matrix: Matrix,
        store: CampaignStore,
        types: Mapping[str, str],
        live: Sequence[Any],
        dead: Mapping[str, str],
        progress: Progress,
        on_progress: Callable[[Progress], None] | None,
        on_drop: Callable[[str], None] | None = None,
        check_hold: Callable[[str], str | None] | None = None,
        hold_guard: Callable[[str], Any] | None = None,
        envs: EnvPlacement | None = None,
    ) -> None:
        self.matrix = matrix
        self.placement = Placement.of(matrix).with_envs(envs)  # envs: which hosts take which environments
        self.on_drop = on_drop or (lambda name: None)
        self.check_hold = check_hold  # host -> None while our hold is ours, else why not (HoldSet.confirm)
        self.hold_guard = hold_guard  # host -> the HoldGuard its trials confirm on the host (HoldSet.trial_guard)
        self.lost: dict[str, str] = {}  # host -> why its hold was lost: no new trial there
        self.recorded_ok: set[str] = set()  # trial ids recorded ok by this launch: never recorded twice
        self.scheduler: str | None = None
        self._checks: ThreadPoolExecutor | None = None
        self.store = store
        self.types = types
        self.specs = {s.name: s for s in live}
        self.dead_reasons = dict(dead)
        self.dead: set[str] = set()
        self.progress = progress
        self.notify = on_progress or (lambda p: None)
        self.attempts = 0
        self.failures: list[str] = []
        self.rounds: Rounds | None = None  # repetitions as bounds: adds the rounds after the planned trials
        self.canaries: Canaries | None = None  # the matrix's canary: a canary run goes first when one is due
        self._writer: ThreadPoolExecutor | None = None  # writes attempt records off the loop (_write)
        self._writes: collections.deque = collections.deque()  # their futures, oldest first
        self._launch = f"{os.getpid()}-{time.monotonic_ns()}"  # this launch, for the order of a host's trials (AttemptSpec.turn)
        self._sent_to: dict[str, int] = {}  # host -> trials sent there by this launch

    def run(self, todo: Sequence[tuple[Trial, int]], scheduler: str | None) -> None:
        queues = self.placement.queues(todo, {*self.specs, *self.dead_reasons})
        # Trials of hosts found dead at the start are recorded as failed, with the reason, without running.
        for name, reason in self.dead_reasons.items():
            for trial, attempt in queues.pop(name, ()):
                self._record_unrun(trial, attempt, name, reason)
        if not any(queues.values()):
            return
        self.scheduler = scheduler
        with client_for(scheduler, n_hosts=len(self.specs)) as client:
            try:
                self._loop(client, queues, shared=scheduler is not None)
                self._flush()
                _release_guests(client, self.matrix.campaign)
            except KeyboardInterrupt:
                self.progress.messages.append("interrupted: stopping running workloads")
                self.notify(self.progress)
                _stop_everything(client, [(s, workdir_for(self.matrix, s)) for s in self.specs.values()], self.matrix.campaign)
                raise
            except SchedulerLost:
                raise  # no scheduler to ask the workers through; their trials end within the trial timeout
            except BaseException:  # e.g. the dataset's disk is full: nothing may keep running unrecorded
                _stop_everything(client, [(s, workdir_for(self.matrix, s)) for s in self.specs.values()], self.matrix.campaign)
                raise
            finally:
                if self._checks is not None:
                    self._checks.shutdown(wait=False)
                    self._checks = None
                self._flush(quiet=True)  # interrupted: the attempts that finished are still recorded

    def _write(self, rec: AttemptRecord) -> None:
        """Record an attempt on one records thread, in order, so the loop never waits for Parquet and fsync.
        A failed write (DatasetError: a full disk) is raised by the next _write or by _flush."""
        while self._writes and self._writes[0].done():
            self._writes.popleft().result()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-records")
        self._writes.append(self._writer.submit(self.store.write_attempt, self.matrix.campaign, self.matrix.workload, self.types, rec))

    def _flush(self, *, quiet: bool = False) -> None:
        """Wait for every record written by _write; raise the first failure unless `quiet`."""
        while self._writes:
            future = self._writes.popleft()
            try:
                future.result()
            except Exception:
                if not quiet:
                    self._writes.clear()
                    raise

    def _loop(self, client: Any, queues: dict[Any, collections.deque], *, shared: bool) -> None:
        """Submit, wait, record, until the queues are empty. `shared`: an external scheduler.

        Two trials in flight per host (a local cluster, trials on the host itself, see _depth): the next one
        waits in the host's worker, behind the host's turn lock (worker._turn), and starts the moment the
        previous one ends, while that one's result travels back here and is written: no round trip between two
        trials of a host. Placement pool sends a second only while there is work for every host, so the end of
        the campaign stays even.

        A trial confirms the campaign's hold on its host in its own first command (AttemptSpec.hold): a lost
        hold stops that trial before anything of it runs, and no new trial goes there. Worker churn: a trial
        names a preferred worker (others allowed). Dask moves it by itself when that worker leaves while
        others run, but a trial that waited while no worker was there stays bound to the worker that left
        (state `no-worker`) even after new workers join: such
        trials are cancelled and sent again, same attempt, to the workers there are now. Only the future the
        controller keeps for a trial is recorded, so a trial is recorded once. No trial starting or finishing
        for RUNNER_STALL_AFTER seconds: the progress output says why. The scheduler going away ends the
        campaign with SchedulerLost (one line; a relaunch resumes).
        """
        # distributed takes about a second to import: only when trials run (runner plan imports this module)
        from distributed import wait
        from distributed.client import FuturesCancelledError

        workers = worker_addresses(client)
        f = _Flight(workers=workers, preferred=preferred_workers(sorted(self.specs), workers))
        if shared:
            threads = sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values())
            if threads < len(self.specs):
                self.progress.messages.append(
                    f"the scheduler has {threads} worker threads for {len(self.specs)} hosts: at most {threads} hosts measure at once"
                )
        else:  # each worker connects to its hosts now: all hosts start their first trial together
            warming = [client.submit(warm, self.specs[n], key=f"warm-{self.matrix.campaign}-{n}-{os.getpid()}-{time.monotonic_ns()}",
                                     workers=[f.preferred[n]], allow_other_workers=True, pure=False)
                       for n in sorted(self.specs) if n in f.preferred]
            with contextlib.suppress(TimeoutError):  # a host that does not answer in time: its first trial says why
                wait(warming, timeout=WARM_TIMEOUT_S)
        stall_s, wait_s = stall_after_s(), worker_wait_s()
        f.checked = f.quiet_since = time.monotonic()
        self.notify(self.progress)
        while True:
            self._fill(client, f, queues, shared)
            if not f.inflight:
                if self._next_round(queues):
                    continue
                closing = self._closing_canaries()
                for name, trial in closing:  # the canary once more after each host's last trial: drift to the end
                    self.progress.total += 1
                    self._send(client, f, name, trial, 1, False, shared)
                if closing:
                    continue
                break
            self.notify(self.progress)
            try:
                done, _ = wait(list(f.inflight), return_when="FIRST_COMPLETED", timeout=1.0)
            except TimeoutError:  # nothing finished within a second: refresh the display and wait again
                done = set()
            except FuturesCancelledError:  # only a lost scheduler connection cancels the futures we keep
                raise SchedulerLost(self._scheduler_lost(len(f.inflight))) from None
            for future in done:
                self._take(future, f, queues)
            if done:
                f.quiet_since = time.monotonic()
            elif time.monotonic() - f.checked >= CHURN_CHECK_S:  # nothing finished for a while: look at the workers
                self._look_at_workers(client, f, stall_s, wait_s)
        # Hosts that died or lost their holds leave trials behind (placement each): record them as failed.
        for key, queue in queues.items():
            while queue:
                trial, attempt = queue.popleft()
                host = key or "pool"
                self._record_unrun(trial, attempt, host, self._unrun_reason(host, trial))

    def _fill(self, client: Any, f: _Flight, queues: dict[Any, collections.deque], shared: bool) -> None:
        """Every host its next trial first, then a second where one may wait (_depth); a canary run goes first
        when one is due."""
        for _pass in range(2):
            ready = [n for n in sorted(self.specs) if n not in self.dead and n not in self.lost and self._pick(queues, n) is not None]
            for name in ready:
                queue = queues.get(self._queue_key(name))
                i = self._pick(queues, name)  # the first trial of its queue this host may run (its environments)
                if queue is None or i is None or len(f.per_host[name]) >= self._depth(name, queue, f.per_host, f.inflight, shared, i):
                    continue
                canary = self.canaries.due(name) if self.canaries is not None else None
                if canary is not None and not self.placement.runs(name, canary):
                    canary = None  # the canary's environment is not one this host runs: none there
                if canary is not None:
                    self.progress.total += 1
                trial, attempt = (canary, 1) if canary is not None else _pop(queue, i)
                key = trial_guest_key(trial)
                following = self.placement.pick(queue, name)
                keep = self.matrix.reuse == "configuration" and key is not None and following is not None and \
                    trial_guest_key(queue[following][0]) == key
                self._send(client, f, name, trial, attempt, keep, shared)

    def _send(self, client: Any, f: _Flight, name: str, trial: Trial, attempt: int, keep: bool, shared: bool) -> None:
        self._sent_to[name] = self._sent_to.get(name, 0) + 1
        spec = AttemptSpec(
            trial, attempt, self.specs[name], self.matrix.timeout, workdir_for(self.matrix, self.specs[name]),
            host_lease=shared, keep_guests=keep, probes=probes_for(trial, self.matrix.probes),
            hold=self.hold_guard(name) if self.hold_guard is not None else None,
            turn=None if shared else (self._launch, self._sent_to[name]),
        )
        future = self._submit(client, spec, f.preferred.get(name))
        f.inflight[future] = (trial, attempt, name)
        f.sent[future] = (spec, f.preferred.get(name))
        f.per_host[name].append(future)
        self.progress.running.setdefault(name, trial.label())
        f.quiet_since = time.monotonic()

    def _take(self, future: Any, f: _Flight, queues: dict[Any, collections.deque]) -> None:
        """A trial's future finished: its record, or why it has none; a trial that found its host gone or its
        hold lost before it ran goes back to its queue (not an attempt)."""
        trial, attempt, name = f.inflight.pop(future)
        f.sent.pop(future, None)
        f.suspects.discard(future)
        with contextlib.suppress(ValueError):
            f.per_host[name].remove(future)
        if f.per_host[name]:  # the next trial of the host started as this one ended
            self.progress.running[name] = f.inflight[f.per_host[name][0]][0].label()
        else:
            self.progress.running.pop(name, None)
        try:
            rec = future.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the trial's worker died repeatedly
            rec = _failure(trial, attempt, name, f"{name}: Dask could not run the trial: {type(exc).__name__}: {one_line(exc)}", "failed")
        if rec.failure_kind == "hold":  # the trial found our hold gone before it ran: not an attempt
            if name not in self.lost:
                self._lose(name, (self.check_hold(name) if self.check_hold else None) or rec.error or "hold lost")
            queues[self._queue_key(name)].appendleft((trial, attempt))
            return
        if rec.failure_kind == "host" and name in self.dead:  # it waited behind the trial that found the
            queues[self._queue_key(name)].appendleft((trial, attempt))  # host gone: not an attempt, goes elsewhere
            return
        self._handle(rec, trial, attempt, name, queues)

    def _look_at_workers(self, client: Any, f: _Flight, stall_s: float, wait_s: float) -> None:
        """Nothing finished for a while: follow the workers that left or came, send again the trials bound to a
        worker that left, and say why nothing moves (RUNNER_STALL_AFTER); every worker gone for longer than
        RUNNER_WORKER_WAIT ends the campaign."""
        self.notify(self.progress)
        f.checked = time.monotonic()
        try:
            now_workers = worker_addresses(client)
            if now_workers != f.workers:
                f.workers, f.preferred = now_workers, preferred_workers(sorted(self.specs), now_workers)
            if not f.workers:
                f.suspects = set()
                if f.no_workers_since is None:
                    f.no_workers_since = f.checked
                    self.progress.messages.append(
                        f"every Dask worker left the scheduler; {len(f.inflight)} trials wait for new workers "
                        f"(up to {wait_s:g} s, RUNNER_WORKER_WAIT)"
                    )
                    self.notify(self.progress)
                elif f.checked - f.no_workers_since > wait_s:
                    raise RunnerError(
                        f"every Dask worker left the scheduler ({len(f.inflight)} trials were running); "
                        "start workers again and relaunch: finished trials are kept"
                    )
                return
            if f.no_workers_since is not None:
                f.no_workers_since = None
                self.progress.messages.append(f"Dask workers are back ({len(f.workers)}); the waiting trials go to them")
            f.suspects = self._rebind(client, f.inflight, f.sent, f.suspects, set(f.workers), f.preferred, f.per_host)
            if f.checked - f.quiet_since >= stall_s:
                if why := why_stalled(client, {fut: name for fut, (_, _, name) in f.inflight.items()}):
                    self.progress.messages.append(
                        f"no progress for {f.checked - f.quiet_since:.0f} s with {self.progress.remaining} trials pending: {why}")
                    self.notify(self.progress)
                f.quiet_since = f.checked  # said (or all running): say it again after another such period
        except OSError as exc:  # the scheduler's connection broke while we asked it something
            raise SchedulerLost(self._scheduler_lost(len(f.inflight), exc)) from None

    def _pick(self, queues: dict[Any, collections.deque], name: str) -> int | None:
        """The index of the first trial in `name`'s queue that it may run (None: none there)."""
        queue = queues.get(self._queue_key(name))
        return None if not queue else self.placement.pick(queue, name)

    def _depth(self, name: str, queue: collections.deque, per_host: Mapping[str, collections.deque], inflight: Mapping[Any, tuple[Trial, int, str]],
               shared: bool, first: int = 0) -> int:
        """How many trials `name` may have in flight: 2 (the next one waits on the host's worker) for trials on
        the host itself with a local cluster, where the turn lock and one worker per host keep them in order;
        1 with a shared scheduler (a waiting trial would hold a worker thread other campaigns could use), for
        guest trials (a kept guest lives in one worker process), and in placement pool once fewer trials
        are left than hosts can take (a trial queued behind another would end a trial length after the rest)."""
        if shared or not _on_host(queue[first][0]) or any(not _on_host(inflight[f][0]) for f in per_host[name]):
            return 1
        if not self.placement.per_host:
            live = [n for n in self.specs if n not in self.dead and n not in self.lost and self.placement.runs(n, queue[first][0])]
            if len(queue) - first < len(live):
                return 1
        return 2

    def _closing_canaries(self) -> list[tuple[str, Trial]]:
        """The matrix's canary: one closing run on each live host that ran trials since its last canary run
        (runner.execution.canary.Canaries.closing); after the last round, so nothing comes after it."""
        if self.canaries is None:
            return []
        hosts = [n for n in sorted(self.specs) if n not in self.dead and n not in self.lost]
        return [(n, trial) for n in hosts if (trial := self.canaries.closing(n)) is not None and self.placement.runs(n, trial)]

    def _queue_key(self, name: str) -> str | None:
        return self.placement.queue_key(name)

    def _next_round(self, queues: dict[Any, collections.deque]) -> bool:
        """Repetitions as bounds: queue the next round's trials (runner.execution.rounds); False if none."""
        if self.rounds is None or not set(self.specs) - self.dead - set(self.lost):  # no host left to run a round
            return False
        more = self.rounds.next_round(frozenset(self.dead) | frozenset(self.lost))
        for trial in more:
            queues.setdefault(self._queue_key(str(trial.host)), collections.deque()).append((trial, 1))
        if more:
            self.progress.total += len(more)
            self.progress.round = self.rounds.round
            self.progress.messages.append(self.rounds.describe(more))
        return bool(more)

    def _submit(self, client: Any, spec: AttemptSpec, worker: str | None) -> Any:
        trial = spec.trial
        return client.submit(
            execute,
            spec,
            key=f"trial-{self.matrix.campaign}-{trial.trial_id}-a{spec.attempt}-{os.getpid()}-{time.monotonic_ns()}",
            pure=False,
            retries=0,
            workers=[worker] if worker else None,
            allow_other_workers=bool(worker),  # Dask refuses allow_other_workers without workers
        )

    def _rebind(
        self, client: Any, inflight: dict[Any, tuple[Trial, int, str]], sent: dict[Any, tuple[AttemptSpec, str | None]],
        suspects: set[Any], workers: set[str], preferred: Mapping[str, str], per_host: Mapping[str, collections.deque],
    ) -> set[Any]:
        """Send again the trials named to a worker that left and running nowhere at two looks in a row (the
        first look may come before the scheduler placed a trial just sent); returns the new suspects."""
        orphans = [f for f, (_, worker) in sent.items() if worker is not None and worker not in workers]
        if not orphans:
            return set()
        running = {key for keys in client.processing().values() for key in keys}
        stuck = {f for f in orphans if f.key not in running}
        moved = [f for f in orphans if f in stuck and f in suspects]
        labels = []
        for old in moved:
            spec, _ = sent.pop(old)
            trial, _, name = entry = inflight.pop(old)
            old.cancel()  # it never started; if it just did, the host lease (shared scheduler) keeps them apart
            new = self._submit(client, spec, preferred.get(name))
            inflight[new], sent[new] = entry, (spec, preferred.get(name))
            queue = per_host[name]
            queue[queue.index(old)] = new  # same place: the host's trials keep their order
            labels.append(f"{name}: {trial.label()}")
        if moved:
            self.progress.messages.append(
                f"{len(moved)} trials were waiting for Dask workers that left; sent again to the workers there are now "
                f"({', '.join(labels)})"
            )
            self.notify(self.progress)
        return stuck - set(moved)

    def _scheduler_lost(self, running: int, exc: BaseException | None = None) -> str:
        where = f"the Dask scheduler at {self.scheduler}" if self.scheduler else "the local Dask scheduler"
        how = f" ({one_line(exc)})" if exc is not None else ""
        return (
            f"lost the connection to {where}{how}: it stopped or restarted; the {running} trials running were not "
            "recorded; relaunch to resume: finished trials are kept"
        )

    def _confirm(self, names: Sequence[str]) -> list[tuple[str, str | None]]:
        """(host, None or why its hold is lost), asked on the hosts in parallel."""
        if not names or self.check_hold is None:
            return [(n, None) for n in names]
        checks = {n: self._pool().submit(self.check_hold, n) for n in names}
        return [(n, checks[n].result()) for n in names]

    def _pool(self) -> ThreadPoolExecutor:
        if self._checks is None:
            self._checks = ThreadPoolExecutor(max_workers=min(16, max(1, len(self.specs))), thread_name_prefix="runner-hold-check")
        return self._checks

    def _lose(self, name: str, why: str) -> None:
        """Our hold on `name` is gone: no new trial there; said at once and recorded in provenance."""
        self.lost[name] = why
        self.progress.messages.append(f"{why}; no new trial starts there")
        self.store.update_provenance(lost_holds=dict(self.lost))
        self.notify(self.progress)

    def sweep_holds(self) -> None:
        """At the end: a hold lost during the last trials is found and recorded too."""
        names = [n for n in sorted(self.specs) if n not in self.dead and n not in self.lost]
        for name, why in self._confirm(names):
            if why is not None:
                self._lose(name, why)
        if self._checks is not None:
            self._checks.shutdown(wait=False)
            self._checks = None

    def _unrun_reason(self, host: str, trial: Trial | None = None) -> str:
        if host in self.dead_reasons or host in self.lost:
            return self.dead_reasons.get(host) or self.lost[host]
        if trial is not None and self.placement.envs is not None:
            env = trial_env(trial)
            able = [n for n in self.specs if self.placement.runs(n, trial)]
            if not any(n not in self.dead and n not in self.lost for n in able):
                lost = sorted(n for n in able if n in self.lost and n not in self.dead_reasons)
                gone = [f"{n}: {self.dead_reasons[n]}" for n in able if n in self.dead_reasons]
                gone += [f"holds lost: {', '.join(lost)}"] if lost else []  # as the message without envs says it
                return f"no live host left that runs env {env}" + (f" ({'; '.join(gone)})" if gone else "")
        if self.lost:
            return f"no live host left to run it (holds lost: {', '.join(sorted(self.lost))})"
        return "no live host left to run it"

    def _handle(self, rec: AttemptRecord, trial: Trial, attempt: int, name: str, queues: dict[Any, collections.deque]) -> None:
        if rec.trial_id in self.recorded_ok:  # a trial sent twice (worker churn) is recorded once
            return
        self._write(rec)  # on the records thread: the host gets its next trial meanwhile
        self.attempts += 1
        self.progress.messages.extend(n for n in dict.fromkeys(rec.notes) if n not in self.progress.messages)  # e.g. a probe unavailable: once
        if rec.status == "ok":
            self.recorded_ok.add(rec.trial_id)
            if self.rounds is not None:
                self.rounds.observe(rec)
            self.progress.done += 1
            self.progress.finished(rec.trial_id)
            self.notify(self.progress)
            return
        if rec.failure_kind == "host" and name not in self.dead:  # (the trial that waited behind it fails too)
            self.dead.add(name)
            self.dead_reasons[name] = rec.error or "unreachable"
            self.progress.messages.append(f"host {name} dropped for the rest of the campaign: {rec.error}")
            self.on_drop(name)  # its hold is released now (or as soon as the host answers), not left to expire
        queue_key = self.placement.queue_key(name)
        retry = attempt < self.matrix.retry.attempts and rec.failure_kind in self.matrix.retry.on and trial.role is None  # canaries: no retry
        if retry and not (queue_key is not None and name in self.dead) and len(self.dead) < len(self.specs):
            self.progress.retried += 1
            queues[queue_key].appendleft((trial, attempt + 1))
            if queue_key is None and name in self.dead:
                self.progress.messages.append(f"trial {trial.label()} will be retried on another host (attempt {attempt + 1})")
        else:
            self.progress.failed += 1
            self.progress.finished(trial.trial_id)
            self.failures.append(f"{trial.trial_id} ({trial.label()}): {rec.error}")
        self.notify(self.progress)

    def _record_unrun(self, trial: Trial, attempt: int, host: str, reason: str) -> None:
        rec = _failure(trial, attempt, host, f"{host}: not run: {reason}", "host")
        self.store.write_attempt(self.matrix.campaign, self.matrix.workload, self.types, rec)
        self.attempts += 1
        self.progress.failed += 1
        self.progress.finished(trial.trial_id)
        self.failures.append(f"{trial.trial_id} ({trial.label()}): {rec.error}")
        self.notify(self.progress)


def _pop(queue: collections.deque, i: int) -> tuple[Trial, int]:
    """Take the `i`th (trial, attempt) out of a queue (the first, mostly)."""
    if i == 0:
        return queue.popleft()
    item = queue[i]
    del queue[i]
    return item


def _on_host(trial: Trial) -> bool:
    """A trial that runs on its host itself (no guest or container)."""
    return not environments.starts_guests(str(trial.param_dict.get("env", defaults.ENV)))


def _failure(trial: Trial, attempt: int, host: str, error: str, kind: str) -> AttemptRecord:
    """The record of an attempt whose result the controller never got (not run, or lost in Dask)."""
    return AttemptRecord.build(trial, attempt, host, "failed", error, kind, started_at=time.time(), accel=None)


def preferred_workers(hosts: Sequence[str], workers: Sequence[str]) -> dict[str, str]:
    """Each host's preferred worker, round robin, so a host's trials reuse one worker's connection (pure)."""
    return {name: workers[i % len(workers)] for i, name in enumerate(hosts)} if workers else {}


def _release_guests(client: Any, campaign: str) -> None:
    """Destroy the guests the workers keep for reuse: the campaign has no trial left for them."""
    try:
        client.run(release_guests, campaign, wait=True)
    except Exception:  # noqa: BLE001 - a worker that left took its guests' dead man's switch with it
        pass


def _stop_everything(client: Any, workdirs: Sequence[tuple[Any, str]], campaign: str) -> None:
    """Stop this campaign's running workloads and guests on every worker (others sharing the scheduler
    keep theirs)."""
    try:
        client.run(kill_running, workdirs, campaign, wait=True)
    except Exception:  # noqa: BLE001 - best effort while shutting down
        pass
