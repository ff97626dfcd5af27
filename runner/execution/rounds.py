"""Rounds of repetitions for a campaign whose matrix gives `repetitions: {min, max, ci}`.

The controller plans `min` repetitions of every cell (runner.trials.plan). When they are done, `Rounds`
says which trials the next round adds: the decision is runner.analysis.adaptive's (pure), the trials are
runner.trials' (`more_repetitions`: the ids are those of the repetition numbers, so they are the same on
every launch). A round's trials are interleaved (repetition k of every cell that needs it, then k+1), and
grouped by guest configuration like the plan when guests are reused.

Resume-safe: a relaunch finds the extra repetitions already in the dataset (`resumed`: those not yet
successful are run again, like any planned trial), reads the values recorded so far, and continues with
the round the data calls for. Its round number, too, comes from the data (`recorded_round`), so the progress
display and the messages go on counting where the last launch stopped instead of starting at 1 again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.analysis.adaptive import AT_MAX, TIGHT, CellState, deciding_metric, next_round, status, step
from runner.matrix.load import AdaptiveRepetitions, Matrix
from runner.records.store import AttemptRecord, Recorded
from runner.records.schema import ordinary_role
from runner.trials import Trial, group_by_guests, more_repetitions, order_trials, trial_id


class Rounds:
    def __init__(self, matrix: Matrix, planned: Sequence[Trial]) -> None:
        assert matrix.adaptive is not None
        self.matrix = matrix
        self.policy: AdaptiveRepetitions = matrix.adaptive
        self.first: dict[str, Trial] = {}
        for t in planned:
            self.first.setdefault(t.cell_id, t)
        self.tried = {cell: self.policy.min for cell in self.first}
        self.values: dict[str, dict[str, list[float]]] = {cell: {} for cell in self.first}
        self.by_rep: dict[str, dict[str, dict[int, float]]] = {cell: {} for cell in self.first}  # read back: metric -> rep -> value
        self.better: dict[str, bool | None] = {}
        self.round = 1

    # -- what the dataset already holds -------------------------------------------------------------------
    def resumed(self, recorded: Mapping[str, Recorded]) -> list[Trial]:
        """Extra repetitions an earlier launch already added (recorded in the dataset), cell by cell."""
        out = []
        for cell, first in self.first.items():
            reps = [r for r in range(self.policy.min + 1, self.policy.max + 1) if trial_id(cell, r) in recorded]
            if reps:
                self.tried[cell] = max(reps)
                out += more_repetitions(first, reps)
        return out

    def load(self, metrics: Any) -> None:
        """The workload's total values recorded so far (a metrics table as pandas), and the round they reach
        (after `resumed`, which finds the highest repetition of each cell)."""
        if metrics is None or len(metrics) == 0:
            return
        m = metrics
        for col in ("thread", "vm", "probe"):
            if col in m.columns:
                m = m[m[col].isna()]
        if "role" in m.columns:  # canary runs are not repetitions of their cell
            m = m[ordinary_role(m["role"])]
        reps = m["repetition"] if "repetition" in m.columns else [None] * len(m)
        for cell, name, value, hib, rep in zip(m["cell_id"], m["metric"], m["value"], m["higher_is_better"], reps, strict=True):
            if cell in self.values:
                self.values[cell].setdefault(str(name), []).append(float(value))
                self.better.setdefault(str(name), _direction(hib))
                if rep is not None and rep == rep:
                    self.by_rep[cell].setdefault(str(name), {})[int(rep)] = float(value)
        self.round = self.recorded_round()

    def recorded_round(self) -> int:
        """The round the recorded repetitions reach (1: none beyond `min`). A cell gets repetitions in one round
        after another from round 2 until it is done (tight or at max: no new value reopens it), so the cell that
        took part in the most rounds names the round. Those are counted by replaying the rule
        (runner.analysis.adaptive.step) on the cell's values by repetition number, up to its highest recorded
        repetition; where the replay finds no step (a repetition that failed then and succeeded on a later
        launch), the rest counts as doubling rounds, the fewest the rule allows."""
        metric = self.metric
        most = 0
        for cell, top in self.tried.items():
            values = self.by_rep[cell].get(metric, {}) if metric else {}
            tried, rounds = self.policy.min, 0
            while tried < top:
                state = CellState(tuple(v for r, v in sorted(values.items()) if r <= tried), tried)
                k = step(state, self.policy.ci, self.policy.max)
                tried, rounds = min(top, tried + (k if k > 0 else tried)), rounds + 1
            most = max(most, rounds)
        return 1 + most

    def observe(self, rec: AttemptRecord) -> None:
        """A successful attempt's totals count toward its cell."""
        if rec.status != "ok" or rec.cell_id not in self.values or rec.role is not None:  # a canary run: not a repetition
            return
        for m in rec.metrics:
            if m.thread is None and m.vm is None and m.probe is None:
                self.values[rec.cell_id].setdefault(m.name, []).append(float(m.value))
                self.better.setdefault(m.name, m.higher_is_better)

    # -- the decision -------------------------------------------------------------------------------------
    @property
    def metric(self) -> str | None:
        return deciding_metric(self.better.items(), self.policy.metric)

    def states(self) -> dict[str, CellState]:
        metric = self.metric
        return {cell: CellState(tuple(self.values[cell].get(metric, ())) if metric else (), self.tried[cell]) for cell in self.first}

    def next_round(self, dead: frozenset[str] = frozenset()) -> list[Trial]:
        """The trials of the next round (empty when every cell met the target or reached max). Cells planned
        on a host in `dead` (placement each) get no more."""
        adds = next_round(self.states(), self.policy.ci, self.policy.max)
        per_cell = []
        for cell, k in adds.items():
            first = self.first[cell]
            if first.host is not None and first.host in dead:
                continue
            reps = list(range(self.tried[cell] + 1, self.tried[cell] + k + 1))
            self.tried[cell] += k
            per_cell.append(more_repetitions(first, reps))
        if not per_cell:
            return []
        self.round += 1
        order = "shuffle" if self.matrix.order == "shuffle" else "interleave"
        trials = order_trials(per_cell, order, self.matrix.seed + self.round)
        return group_by_guests(trials) if self.matrix.reuse == "configuration" else trials

    def describe(self, trials: Sequence[Trial]) -> str:
        """One line for the progress display about a round that starts."""
        cells = len({t.cell_id for t in trials})
        return (f"round {self.round}: {cells} cell(s) wider than +-{100 * self.policy.ci:g}% on {self.metric}: "
                f"{len(trials)} more trial(s) (at most {self.policy.max} repetitions per cell)")

    def summary(self) -> str:
        """One line at the end: how many cells met the target, stopped at max, or are still open."""
        counts = {TIGHT: 0, AT_MAX: 0}
        open_cells = 0
        for state in self.states().values():
            s = status(state, self.policy.ci, self.policy.max)
            if s in counts:
                counts[s] += 1
            else:
                open_cells += 1
        more = f", {open_cells} open (interrupted or failing)" if open_cells else ""
        return (f"repetitions after {self.round} round(s): {counts[TIGHT]} cell(s) met +-{100 * self.policy.ci:g}% on {self.metric}, "
                f"{counts[AT_MAX]} stopped at max {self.policy.max}{more}")


def _direction(hib: Any) -> bool | None:
    """higher_is_better as read back from Parquet (None, NaN or pandas NA: neutral)."""
    try:
        return None if hib is None or hib != hib else bool(hib)
    except TypeError:  # pandas NA
        return None
