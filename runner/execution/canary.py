"""Canary runs for a campaign whose matrix names a `canary: {cell: {...}, every: N}`.

The canary is one cell of the matrix run again and again on each host, to see the host drift while a
campaign runs (another user, thermal throttling, a governor change): before a host's first trial, then
after every N trials of the matrix it runs (`runner.trials.canary_due`, the rule `runner plan` shows with
`place_canaries`). Placement `pool` too: the canary is pinned to the host it watches. The controller asks
`Canaries.due(host)` each time it is about to give a host a trial of the matrix; a canary run goes first.

A canary run is a Trial with role `canary` (the dataset's `role` column): the same cell and parameters, an
id of its own (`runner.trials.canary_id`: cell, host, run number), never a repetition of its cell (the
analysis keeps it out of the cell's statistics) and never retried (the next one comes N trials later). It
also reads the host's state (the `host_state` probe: governor, turbo, NUMA balancing, irqbalance, load from
other processes, throttling counts), so the trials between two canary runs (a batch) have their host state
on record.

Resume-safe: a relaunch finds the canary runs already recorded (by their ids) and numbers the next one
after them, and counts the trials each host ran since its last canary run (`since_last_canary`), so the
rhythm goes on where the last launch left it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from runner.matrix.load import Matrix
from runner.trials import CANARY, Trial, canary_cells, canary_due, canary_id, canary_trial

HOST_STATE = "host_state"  # the probe every canary run carries (runner.probes.host_state)


def probes_for(trial: Trial, probes: Sequence[str]) -> tuple[str, ...]:
    """The probes of a trial: the matrix's; a canary run reads the host's state first (before the others start)."""
    if trial.role != CANARY:
        return tuple(probes)
    return (HOST_STATE, *(p for p in probes if p != HOST_STATE))


def since_last_canary(runs: Iterable[tuple[str, str | None, float]]) -> dict[str, int]:
    """host -> attempts of matrix trials it started after its last canary run, from (host, role, started_at)
    of every recorded attempt (pure). A host without any canary run is left out (its next trial is one)."""
    runs = list(runs)
    last: dict[str, float] = {}
    for host, role, started in runs:
        if role == CANARY and started >= last.get(host, float("-inf")):
            last[host] = started
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
        self.each = matrix.placement == "each"
        self.templates = dict(templates)
        self.since: dict[str, int] = {}  # host -> matrix trials since its last canary run (absent: none yet)
        self.next_run: dict[str, int] = {}  # host -> number of its next canary run
        self.started = 0  # canary runs this launch started
        self.recorded = 0  # canary runs earlier launches recorded (numbered before this launch's)

    @classmethod
    def start(cls, matrix: Matrix, cpus_by_host: Mapping[str, int], recorded: Collection[str], trials: Any = None) -> Canaries:
        """The canary of `matrix` (which has one) on the hosts of `cpus_by_host`, resumed from the trial ids
        already `recorded` and the trials table read back (pandas; None for a new campaign)."""
        canaries = cls(matrix, canary_cells(matrix, cpus_by_host))
        rows = ()
        if trials is not None and len(trials):
            rows = zip(trials["host"].astype(str), trials["role"] if "role" in trials.columns else [None] * len(trials),
                       (t.timestamp() for t in trials["started_at"]), strict=True)
        canaries.resume(recorded, [(h, r if isinstance(r, str) else None, s) for h, r, s in rows], cpus_by_host)
        return canaries

    def template(self, host: str) -> Trial | None:
        return self.templates.get(host if self.each else None)

    def resume(self, recorded: Collection[str], runs: Iterable[tuple[str, str | None, float]], hosts: Iterable[str]) -> None:
        """Number each host's next canary run after those recorded, and count its trials since the last one."""
        self.since = since_last_canary(runs)
        for host in hosts:
            template = self.template(host)
            if template is None:
                continue
            run = 1
            while canary_id(template.cell_id, host, run) in recorded:
                run += 1
            self.next_run[host] = run
            self.recorded += run - 1

    def due(self, host: str) -> Trial | None:
        """The canary run `host` runs now, if one is due; else None, and the trial of the matrix it runs instead
        is counted."""
        template = self.template(host)
        if template is None:
            return None
        since = self.since.get(host)
        if not canary_due(since, self.every):
            self.since[host] = (since or 0) + 1
            return None
        run = self.next_run.get(host, 1)
        self.next_run[host] = run + 1
        self.since[host] = 0
        self.started += 1
        return canary_trial(template, host, run)

    def describe(self) -> str:
        """One line for the progress display at the start."""
        template = next(iter(self.templates.values()), None)
        cell = " ".join(f"{k}={v}" for k, v in (template.written if template else ()))
        return f"canary {cell}: before the first and after every {self.every} trials on each host (drift watch)"
