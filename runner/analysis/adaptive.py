"""Repetitions until the interval is tight: which cells need more repetitions, and how many. Pure functions.

A matrix may give `repetitions: {min: 3, max: 30, ci: 0.05}`. Every cell first gets `min` repetitions; then
the campaign runs rounds: each round asks `next_round` which cells still have a 95% interval of the median
(the robust estimate of runner.analysis.stats) wider than +-ci relative to the median, and gives each of
them more repetitions, never past `max`. The step is the estimate of what the cell still needs
(`repetitions_needed`), at least 1 and at most the repetitions it has (at most doubling per round: an
estimate from a few values is rough), so a cell near the target gets one more and a wild one grows
geometrically: 3, 6, 12, 24, 30.

A cell's state is plain data: the values of the deciding metric from its successful repetitions and the
highest repetition number tried so far (failures count toward `max`, so a cell that keeps failing ends;
a cell without any successful repetition gets no more).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from runner.analysis.stats import as_pandas, relative_halfwidth, repetitions_needed, robust_ci_halfwidth
from runner.records.schema import ordinary_role

TIGHT, AT_MAX, OPEN = "met target", "stopped at max", "open"


@dataclass(frozen=True)
class CellState:
    values: tuple[float, ...]  # the deciding metric of each successful repetition
    tried: int  # highest repetition number run (or queued) so far


def ci_rel(values: Sequence[float]) -> float:
    """Half-width of the 95% interval of the median relative to |median| (nan below 2 values, inf at median 0)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return float(relative_halfwidth(robust_ci_halfwidth(q3 - q1, x.size), med))


def status(state: CellState, ci: float, max_reps: int) -> str:
    """TIGHT when the interval is within +-ci, AT_MAX when the cell has had `max_reps` repetitions, else OPEN."""
    rel = ci_rel(state.values)
    if not math.isnan(rel) and rel <= ci:
        return TIGHT
    return AT_MAX if state.tried >= max_reps else OPEN


def step(state: CellState, ci: float, max_reps: int) -> int:
    """How many more repetitions the cell gets this round (0: it is done)."""
    if status(state, ci, max_reps) != OPEN:
        return 0
    n = len(state.values)
    room = max_reps - state.tried
    rel = ci_rel(state.values)
    if n == 0:
        return 0  # every repetition failed: more of them would fail too
    if n < 2 or not math.isfinite(rel):
        return min(1, room)  # no spread to go by (failures, or a zero median): one more at a time
    need = int(repetitions_needed(rel, n, ci))
    return max(0, min(room, max(1, min(need - n, n))))


def next_round(cells: Mapping[str, CellState], ci: float, max_reps: int) -> dict[str, int]:
    """cell -> repetitions to add this round, for the cells that need more (empty: every cell is done)."""
    out = {}
    for cell, state in cells.items():
        if (k := step(state, ci, max_reps)) > 0:
            out[cell] = k
    return out


def deciding_metric(metrics: Iterable[tuple[str, bool | None]], chosen: str | None = None) -> str | None:
    """The metric whose interval decides: `chosen`, else throughput, else the first higher-is-better metric
    by name, else the first by name. `metrics`: (name, higher_is_better) of the workload's total rows."""
    seen = dict(metrics)
    if chosen is not None:
        return chosen
    if "throughput" in seen:
        return "throughput"
    better = sorted(m for m, hib in seen.items() if hib is True)
    return better[0] if better else (min(seen) if seen else None)


def workload_totals(metrics: pd.DataFrame) -> pd.DataFrame:
    """The workload's own total rows: thread, vm and probe null, and no canary runs (role null)."""
    mask = np.ones(len(metrics), dtype=bool)
    for col in ("thread", "vm", "probe"):
        if col in metrics.columns:
            mask &= metrics[col].isna().to_numpy()
    if "role" in metrics.columns:
        mask &= ordinary_role(metrics["role"])
    return metrics[mask]


def repetition_table(metrics: object, trials: object, policy: Mapping[str, object]) -> pd.DataFrame:
    """Per cell of a campaign run with repetitions as bounds: the deciding metric, repetitions run, the
    relative interval half-width and whether it met the target or stopped at max (`policy`: min, max, ci,
    metric, as the campaign's provenance records it)."""
    m = workload_totals(as_pandas(metrics))
    t = as_pandas(trials)
    if "role" in t.columns:  # canary runs are numbered on their own: not repetitions of the cell
        t = t[ordinary_role(t["role"])]
    ci, max_reps = float(policy["ci"]), int(policy["max"])  # type: ignore[arg-type]
    metric = deciding_metric(zip(m["metric"], m.get("higher_is_better", pd.Series([None] * len(m)))), policy.get("metric"))  # type: ignore[arg-type]
    rows = []
    tried = t.groupby("cell_id")["repetition"].max() if not t.empty else pd.Series(dtype=int)
    chosen = m[m["metric"] == metric]
    for cell, reps in tried.items():
        values = tuple(chosen.loc[chosen["cell_id"] == cell, "value"].astype(float))
        state = CellState(values, int(reps))
        rows.append({"cell_id": cell, "metric": metric, "repetitions": int(reps), "ok": len(values),
                     "ci_rel": ci_rel(values), "status": status(state, ci, max_reps)})
    return pd.DataFrame(rows, columns=["cell_id", "metric", "repetitions", "ok", "ci_rel", "status"])
