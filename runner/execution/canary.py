"""Canary runs for a campaign whose matrix names a `canary: {cell: {...}, every: N, minutes: M}`.

The canary is one cell of the matrix run again and again on each host, to see the host drift while a
campaign runs (another user, thermal throttling, a governor change): before a host's first trial, then
after every N trials of the matrix it runs or once M minutes have passed since its last canary run started,
whichever comes first (`runner.trials.canary_due`, the rule `runner plan` shows with `place_canaries`), and
once more after its last trial (`closing`), so the series covers the end of the campaign. Placement `pool`
too: the canary is pinned to the host it watches. The controller asks `Canaries.due(host)` each time it is
about to give a host a trial of the matrix; a canary run goes first. It asks `Canaries.closing(host)` when
the host has no trial of the matrix left.

A canary run is a Trial with role `canary` (the dataset's `role` column): the same cell and parameters, an
id of its own (`runner.trials.canary_id`: cell, host, run number), never a repetition of its cell (the
analysis keeps it out of the cell's statistics) and never retried (the next one comes N trials later). It
also reads the host's state (the `host_state` probe: governor, turbo, NUMA balancing, irqbalance, load from
other processes, throttling counts), so the trials between two canary runs (a batch) have their host state
on record.

Resume-safe: a relaunch finds the canary runs already recorded (by their ids) and numbers the next one
after them, counts the trials each host ran since its last canary run (`since_last_canary`), and takes the
wall time since that run started as already elapsed (`last_canary_started`), so the rhythm goes on where the
last launch left it. Within a launch time is time.monotonic() (a clock step does not move the rhythm).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from runner.matrix.load import Matrix
from runner.trials import CANARY, Trial, canary_cells, canary_due, canary_id, canary_rule, canary_trial

HOST_STATE = "host_state"  # the probe every canary run carries (runner.probes.host_state)


def probes_for(trial: Trial, probes: Sequence[str]) -> tuple[str, ...]:
    """The probes of a trial: the matrix's; a canary run reads the host's state first (before the others start)."""
    if trial.role != CANARY:
        return tuple(probes)
    return (HOST_STATE, *(p for p in probes if p != HOST_STATE))


def last_canary_started(runs: Iterable[tuple[str, str | None, float]]) -> dict[str, float]:
    """host -> started_at (wall time, s) of its last canary run, from (host, role, started_at) of every
    recorded attempt (pure). A host without any canary run is left out."""
    last: dict[str, float] = {}
    for host, role, started in runs:
        if role == CANARY and started >= last.get(host, float("-inf")):
            last[host] = started
    return last


def since_last_canary(runs: Iterable[tuple[str, str | None, float]]) -> dict[str, int]:
    """host -> attempts of matrix trials it started after its last canary run, from (host, role, started_at)
    of every recorded attempt (pure). A host without any canary run is left out (its next trial is one)."""
    runs = list(runs)
    last = last_canary_started(runs)
    out = dict.fromkeys(last, 0)
    for host, role, started in runs:
        if role != CANARY and host in last and started > last[host]:
            out[host] += 1
    return out


class Canaries:
    """Decides, host by host, when the next trial is a canary run (see the module docstring)."""

    def __init__(self, matrix: Matrix, templates: Mapping[str | None, Trial]) -> None:
        assert matrix.canary is not None
        self.every = matrix.canary.every
        self.minutes = matrix.canary.minutes
        self.each = matrix.placement == "each"
        self.templates = dict(templates)
        self.since: dict[str, int] = {}  # host -> matrix trials since its last canary run (absent: none yet)
        self.next_run: dict[str, int] = {}  # host -> number of its next canary run
        self.last_at: dict[str, float] = {}  # host -> time.monotonic() when its last canary run started
        self.closed: set[str] = set()  # hosts that got their closing canary run this launch
        self.started = 0  # canary runs this launch started
        self.recorded = 0  # canary runs earlier launches recorded (numbered before this launch's)

    @classmethod
    def start(cls, matrix: Matrix, cpus_by_host: Mapping[str, int], recorded: Collection[str], trials: Any = None, *,
              now: float | None = None, wall: float | None = None) -> Canaries:
        """The canary of `matrix` (which has one) on the hosts of `cpus_by_host`, resumed from the trial ids
        already `recorded` and the trials table read back (pandas; None for a new campaign). `now`, `wall`:
        time.monotonic() and time.time() (for tests)."""
        canaries = cls(matrix, canary_cells(matrix, cpus_by_host))
        rows = ()
        if trials is not None and len(trials):
            rows = zip(trials["host"].astype(str), trials["role"] if "role" in trials.columns else [None] * len(trials),
                       (t.timestamp() for t in trials["started_at"]), strict=True)
        canaries.resume(recorded, [(h, r if isinstance(r, str) else None, s) for h, r, s in rows], cpus_by_host, now=now, wall=wall)
        return canaries

    def template(self, host: str) -> Trial | None:
        return self.templates.get(host if self.each else None)

    def resume(self, recorded: Collection[str], runs: Iterable[tuple[str, str | None, float]], hosts: Iterable[str], *,
               now: float | None = None, wall: float | None = None) -> None:
        """Number each host's next canary run after those recorded, count its trials since the last one, and
        date that one back by the wall time since it started (`now`: time.monotonic(), `wall`: time.time())."""
        runs = list(runs)
        self.since = since_last_canary(runs)
        now = time.monotonic() if now is None else now
        wall = time.time() if wall is None else wall
        self.last_at = {host: now - max(0.0, wall - started) for host, started in last_canary_started(runs).items()}
        for host in hosts:
            template = self.template(host)
            if template is None:
                continue
            run = 1
            while canary_id(template.cell_id, host, run) in recorded:
                run += 1
            self.next_run[host] = run
            self.recorded += run - 1

    def due(self, host: str, now: float | None = None) -> Trial | None:
        """The canary run `host` runs now, if one is due; else None, and the trial of the matrix it runs instead
        is counted. `now`: time.monotonic() (for tests)."""
        template = self.template(host)
        if template is None:
            return None
        now = time.monotonic() if now is None else now
        since, last = self.since.get(host), self.last_at.get(host)
        if not canary_due(since, self.every, None if last is None else now - last, self.minutes):
            self.since[host] = (since or 0) + 1
            return None
        return self._run(template, host, now)

    def closing(self, host: str, now: float | None = None) -> Trial | None:
        """The canary run `host` runs after its last trial of the matrix, so the series covers the end of the
        campaign: one if the host ran a trial of the matrix since its last canary run (this launch or, resumed,
        an earlier one), at most once per host and launch; else None."""
        template = self.template(host)
        if template is None or host in self.closed or not self.since.get(host):
            return None
        self.closed.add(host)
        return self._run(template, host, time.monotonic() if now is None else now)

    def _run(self, template: Trial, host: str, now: float) -> Trial:
        run = self.next_run.get(host, 1)
        self.next_run[host] = run + 1
        self.since[host] = 0
        self.last_at[host] = now
        self.started += 1
        return canary_trial(template, host, run)

    def describe(self) -> str:
        """One line for the progress display at the start."""
        template = next(iter(self.templates.values()), None)
        cell = " ".join(f"{k}={v}" for k, v in (template.written if template else ()))
        return f"canary {cell}: {canary_rule(self.every, self.minutes)} on each host (drift watch)"
