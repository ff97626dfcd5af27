"""Why a collapse happens: the probes' figures at the cells just before and at a collapse point, side by side.

For every slice whose throughput collapses (runner.analysis.collapse), `explain_collapses` takes the two
neighbouring loads, the last one before the collapse point and the collapse point itself, and gives for
each the median over the repetitions of:
- the collapsing metric itself;
- every probe figure recorded there (rows with a `probe`, totals: thread and vm null), e.g.
  perf_stat.context_switches, schedstat.run_delay_s, schedstat.delay_ratio, kvm_exits.directed_yield_attempted;
- for counts and times, the same per operation of the workload, when the workload reports how many it did
  (a total metric in `ops`, lockbench's total_ops: lock acquisitions): the ratio is taken trial by trial,
  then the median (context switches per acquisition, run delay per acquisition, ...).
and the change from before to after (after / before). Pure functions over the metrics table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis.collapse import DEFAULT_DROP, collapse_table
from runner.analysis.stats import as_pandas, check_metrics, param_columns, slice_label
from runner.records.schema import ordinary_role

OPS_UNIT = "ops"  # a workload total in this unit counts operations (lockbench total_ops: acquisitions)
# Units of probe figures that grow with the work done: they are also shown per operation.
PER_OP_UNITS = frozenset({"switches", "migrations", "events", "contentions", "acquisitions", "cycles", "instructions",
                          "s", "us"})
COLUMNS = ["figure", "kind", "unit", "before", "after", "change"]  # kind: result, probe or per op


@dataclass(frozen=True)
class Explanation:
    """One collapse and its figures: `table` has COLUMNS (change = after / before, NaN when before is 0 or
    missing)."""

    params: dict[str, Any]  # the slice's parameters (metric and every parameter but the axis)
    label: str
    axis: str
    peak_n: float
    before_n: float
    after_n: float
    drop: float
    table: pd.DataFrame
    probes: int  # probe figures in the table (0: nothing recorded to explain it with)


def _match(frame: pd.DataFrame, params: dict[str, Any]) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for col, v in params.items():
        if col not in frame.columns:
            continue
        mask &= frame[col].isna().to_numpy() if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA \
            else (frame[col] == v).fillna(False).to_numpy(dtype=bool)
    return mask


def _medians(rows: pd.DataFrame, axis: str, before: float, after: float) -> tuple[float, float]:
    def at(n: float) -> float:
        v = rows.loc[(rows[axis] == n).to_numpy(), "value"].astype(float)
        v = v[np.isfinite(v)]
        return float(v.median()) if len(v) else math.nan

    return at(before), at(after)


def explain_slice(metrics: pd.DataFrame, params: dict[str, Any], axis: str, before: float, after: float) -> pd.DataFrame:
    """The table for one slice (params: its parameters with `metric`, the collapsing one) between two loads."""
    metric = params["metric"]
    where = {k: v for k, v in params.items() if k != "metric"}
    m = metrics[_match(metrics, where) & metrics[axis].isin([before, after]).to_numpy()]
    for col in ("thread", "vm"):
        if col in m.columns:
            m = m[m[col].isna().to_numpy()]
    if "role" in m.columns:
        m = m[ordinary_role(m["role"])]
    probe = m["probe"].notna().to_numpy() if "probe" in m.columns else np.zeros(len(m), dtype=bool)
    own, probed = m[~probe], m[probe]
    rows = []

    def add(figure: str, kind: str, unit: str, values: pd.DataFrame) -> None:
        b, a = _medians(values, axis, before, after)
        if math.isnan(b) and math.isnan(a):
            return
        rows.append({"figure": figure, "kind": kind, "unit": unit, "before": b, "after": a,
                     "change": a / b if b and not math.isnan(b) else math.nan})

    mine = own[(own["metric"] == metric).to_numpy()]
    add(str(metric), "result", _unit(mine), mine)
    ops_name = _ops_metric(own)
    ops = own[(own["metric"] == ops_name).to_numpy()].drop_duplicates("trial_id").set_index("trial_id")["value"] \
        if ops_name and "trial_id" in own.columns else None
    for name, r in sorted(probed.groupby("metric", sort=True), key=lambda kv: str(kv[0])):
        unit = _unit(r)
        add(str(name), "probe", unit, r)
        if ops is not None and unit in PER_OP_UNITS:
            per = r.assign(value=r["value"].astype(float) / r["trial_id"].map(ops).astype(float).replace(0, np.nan))
            add(f"{name} per op", "per op", f"{unit}/op", per)
    return pd.DataFrame(rows, columns=COLUMNS)


def _unit(rows: pd.DataFrame) -> str:
    if "unit" not in rows.columns or not rows["unit"].notna().any():
        return ""
    return str(rows["unit"].dropna().iloc[0])


def _ops_metric(own: pd.DataFrame) -> str | None:
    """The workload's count of operations: a total metric whose unit is `ops` (first by name)."""
    if "unit" not in own.columns or own.empty:
        return None
    names = sorted(map(str, own.loc[(own["unit"] == OPS_UNIT).fillna(False).to_numpy(dtype=bool), "metric"].unique()))
    return names[0] if names else None


def explained_rows(metrics: Any) -> pd.DataFrame:
    """The rows an explanation reads: totals of the workload and of the probes (thread, vm and role null), a
    small part of a large table; take them once for many collapses."""
    m = as_pandas(metrics)
    check_metrics(m)
    keep = np.ones(len(m), dtype=bool)
    for col in ("thread", "vm"):
        if col in m.columns:
            keep &= m[col].isna().to_numpy()
    if "role" in m.columns:
        keep &= ordinary_role(m["role"])
    return m[keep]


def explain_collapse(rows: pd.DataFrame, params: dict[str, Any], axis: str, peak_n: float, collapse_n: float, drop: float,
                     label: str) -> Explanation | None:
    """The Explanation of one collapse (from runner.analysis.collapse) of the slice `params` (its `metric` and
    every parameter but the axis), over `rows` (explained_rows); None when no load precedes the collapse point."""
    where = {k: v for k, v in params.items() if k != "metric"}
    own = rows[_match(rows, where) & (rows["metric"] == params["metric"]).to_numpy()]
    levels = np.sort(own[axis].dropna().unique().astype(float))
    earlier = levels[levels < collapse_n]
    if not earlier.size:
        return None
    before = float(earlier[-1])
    t = explain_slice(rows, params, axis, before, float(collapse_n))
    return Explanation(dict(params), label, axis, float(peak_n), before, float(collapse_n), float(drop), t,
                       int((t["kind"] == "probe").sum()))


def explain_collapses(metrics: Any, metric_names: Sequence[str], *, axis: str, d: float = DEFAULT_DROP,
                      band: str = "max") -> list[Explanation]:
    """An Explanation for every collapsed slice of each metric in `metric_names` (metrics that scale)."""
    m = explained_rows(metrics)
    out = []
    label_cols = [c for c in param_columns(m) if c != axis and m[c].nunique(dropna=False) > 1]
    for name in metric_names:
        if not (m["metric"] == name).any():
            continue
        table = collapse_table(m, axis=axis, metric=name, d=d, band=band)
        if table.empty:
            continue
        for _, c in table[table["collapsed"]].iterrows():
            params = {k: c[k] for k in ["metric", *(p for p in param_columns(m) if p != axis)] if k in c.index}
            label = slice_label({"metric": name, **{k: params[k] for k in label_cols if k in params}})
            if (e := explain_collapse(m, params, axis, c["peak_n"], c["collapse_n"], c["drop"], label)) is not None:
                out.append(e)
    return out
