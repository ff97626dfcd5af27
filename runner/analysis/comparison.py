"""Compare two data sets cell by cell: relative change of the median, bootstrap interval, Mann-Whitney U, FDR.

Cells are matched on their parameters (workload, env, accel, shared axes, metric) without the campaign, so two
campaigns, or two variants of one campaign (`compare_variants`), line up. For each matched cell:
- change = median(B) / median(A) - 1 with a percentile bootstrap interval (repetitions resampled in A and B);
- the two-sided Mann-Whitney U test of A against B (scipy), robust to the skewed, noisy distributions near a
  collapse;
- q-values by Benjamini-Hochberg across all cells compared, so a campaign with hundreds of cells does not
  report regressions that are only multiple-testing noise.
A cell is a regression or an improvement when its q-value is at most `q`, by the metric's higher_is_better.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, mannwhitneyu

from runner.analysis.stats import as_pandas, bootstrap_ci, check_metrics, param_columns, totals
from runner.errors import BadDatasetError

VERDICT_ORDER = {"regression": 0, "improvement": 1, "changed": 2, "same": 3, "untested": 4}


def compare(a: Any, b: Any, *, metric: str | None = None, q: float = 0.05, n_boot: int = 2000, seed: int = 0,
            level: float = 0.95, ignore: Sequence[str] = ()) -> pd.DataFrame:
    """Compare the totals of data set `b` against baseline `a` cell by cell.

    Returns one row per matched (cell, metric): its parameters, `n_a`, `n_b`, `median_a`, `median_b`, `change`
    (relative), `change_low`/`change_high` (interval at `level`), `p` (Mann-Whitney U), `q` (BH-adjusted),
    `higher_is_better` and `verdict` (regression, improvement, changed when the metric has no direction, same, or
    untested with fewer than 2 repetitions on a side). Regressions come first, then improvements, by size.
    `ignore` names parameter columns left out of the matching.
    """
    a, b = as_pandas(a), as_pandas(b)
    check_metrics(a)
    check_metrics(b)
    skip = {"campaign", *ignore}
    keys = ["metric"] + [c for c in param_columns(a) if c in set(param_columns(b)) and c not in skip]
    ta = totals(a, metric)
    tb = totals(b, metric)
    ta = ta[ta["value"].notna().to_numpy()]
    tb = tb[tb["value"].notna().to_numpy()]
    if ta.empty or tb.empty:
        raise BadDatasetError(f"nothing to compare: {'A' if ta.empty else 'B'} has no total rows" + (f" of metric {metric!r}" if metric else ""))
    ga, gb = _groups(ta, keys), _groups(tb, keys)
    hib = {}
    if "higher_is_better" in ta.columns:
        hib = ta.drop_duplicates("metric").set_index("metric")["higher_is_better"].to_dict()
    rng = np.random.default_rng(seed)
    rows = []
    for key, xa in ga.items():
        xb = gb.get(key)
        if xb is None:
            continue
        ma, mb = float(np.median(xa)), float(np.median(xb))
        change = mb / ma - 1 if ma else np.nan
        lo, hi = bootstrap_ci((xa, xb), _median_change, n_boot=n_boot, level=level, seed=rng) if ma else (np.nan, np.nan)
        p = np.nan
        if xa.size >= 2 and xb.size >= 2:
            p = 1.0 if np.ptp(np.concatenate([xa, xb])) == 0 else float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
        rows.append({**dict(zip(keys, key)), "n_a": xa.size, "n_b": xb.size, "median_a": ma, "median_b": mb,
                     "change": change, "change_low": float(lo), "change_high": float(hi), "p": p})
    if not rows:
        raise BadDatasetError(f"no cell of B matches a cell of A on {', '.join(keys)}")
    out = pd.DataFrame(rows)
    out["higher_is_better"] = out["metric"].map(hib) if hib else None
    tested = out["p"].notna().to_numpy()
    out["q"] = np.nan
    if tested.any():
        out.loc[tested, "q"] = false_discovery_control(out.loc[tested, "p"].to_numpy(), method="bh")
    out["verdict"] = [_verdict(r.q, r.change, r.higher_is_better, q) for r in out.itertuples()]
    out["_order"] = out["verdict"].map(VERDICT_ORDER)
    out["_size"] = -out["change"].abs()
    return out.sort_values(["_order", "_size"], kind="stable").drop(columns=["_order", "_size"]).reset_index(drop=True)


def _median_change(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Relative change of the median from sample a to sample b, per bootstrap replicate."""
    return np.median(b, axis=axis) / np.median(a, axis=axis) - 1


def _groups(tot: pd.DataFrame, keys: list[str]) -> dict[tuple, np.ndarray]:
    """Values per key; null key parts become None so that absent axis values match each other."""
    out = {}
    for k, v in tot.groupby(keys, dropna=False, observed=True):
        k = k if isinstance(k, tuple) else (k,)
        out[tuple(None if pd.isna(x) else x for x in k)] = v["value"].to_numpy(dtype=float)
    return out


def _verdict(qval: float, change: float, hib: Any, q: float) -> str:
    if pd.isna(qval):
        return "untested"
    if qval > q:
        return "same"
    if hib is None or pd.isna(hib):
        return "changed"
    return "improvement" if (change > 0) == bool(hib) else "regression"


def compare_variants(metrics: Any, axis: str, a: Any, b: Any, **kwargs: Any) -> pd.DataFrame:
    """Compare variant `b` of `axis` against variant `a` within one data set (e.g. lock=oticket vs lock=ticket)."""
    metrics = as_pandas(metrics)
    if axis not in metrics.columns:
        raise BadDatasetError(f"no axis {axis!r} in the metrics table; axes: {', '.join(param_columns(metrics))}")
    known = sorted(map(str, metrics[axis].dropna().unique()))
    for v in (a, b):
        if not (metrics[axis] == v).any():
            raise BadDatasetError(f"no rows with {axis}={v!r}; known: {', '.join(known)}")
    ignore = tuple(kwargs.pop("ignore", ())) + (axis,)
    return compare(metrics[(metrics[axis] == a).to_numpy()], metrics[(metrics[axis] == b).to_numpy()], ignore=ignore, **kwargs)
