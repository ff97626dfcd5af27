"""Compare two data sets cell by cell: relative change of the median, bootstrap interval, Mann-Whitney U, FDR.

Cells are matched on their parameters (workload, env, accel, shared axes, metric) without the campaign, so two
campaigns, or two variants of one campaign (`compare_variants`), line up. For each matched cell:
- change = median(B) / median(A) - 1 with a percentile bootstrap interval (repetitions resampled in A and B);
- the two-sided Mann-Whitney U test of A against B (scipy), robust to the skewed, noisy distributions near a
  collapse;
- q-values by Benjamini-Hochberg across all cells compared, so a campaign with hundreds of cells does not
  report regressions that are only multiple-testing noise.
Every cell gets a verdict that follows both the test and the interval:
- `too few`: the repetitions cannot show a difference whatever the data: fewer than 2 on a side, or so few that
  the smallest p-value the exact test can give (2 / C(n_a + n_b, n_a): 0.1 at 3 against 3) exceeds `q`;
- `better` / `worse` (by the metric's higher_is_better; `changed` when the metric has no direction): q-value at
  most `q` and an interval that excludes 0;
- `not significant` otherwise (the test, or the interval, cannot tell the change from noise).
`why` says in words what decided. Changes are fractions in the table (0.05 is +5 %); `percent` formats them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.stats import false_discovery_control, mannwhitneyu

from runner.analysis.stats import as_pandas, bootstrap_ci, check_metrics, param_columns, totals
from runner.errors import BadDatasetError

WORSE, BETTER, CHANGED, NOT_SIGNIFICANT, TOO_FEW = "worse", "better", "changed", "not significant", "too few"
VERDICT_ORDER = {WORSE: 0, BETTER: 1, CHANGED: 2, NOT_SIGNIFICANT: 3, TOO_FEW: 4}


def compare(a: Any, b: Any, *, metric: str | None = None, q: float = 0.05, n_boot: int = 2000, seed: int = 0,
            level: float = 0.95, ignore: Sequence[str] = ()) -> pd.DataFrame:
    """Compare the totals of data set `b` against baseline `a` cell by cell.

    Returns one row per matched (cell, metric): its parameters, `n_a`, `n_b`, `median_a`, `median_b`, `change`
    (relative), `change_low`/`change_high` (interval at `level`), `p` (Mann-Whitney U), `q` (BH-adjusted),
    `unit`, `higher_is_better`, `verdict` (worse, better, changed, not significant, too few: see the module's
    docstring) and `why`. Worse cells come first, then better ones, by size.
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
    hib, units = {}, {}
    if "higher_is_better" in ta.columns:
        hib = ta.drop_duplicates("metric").set_index("metric")["higher_is_better"].to_dict()
    if "unit" in ta.columns:
        units = ta.drop_duplicates("metric").set_index("metric")["unit"].to_dict()
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
    out["unit"] = out["metric"].map(units).fillna("") if units else ""
    out["higher_is_better"] = out["metric"].map(hib) if hib else None
    tested = out["p"].notna().to_numpy()
    out["q"] = np.nan
    if tested.any():
        out.loc[tested, "q"] = false_discovery_control(out.loc[tested, "p"].to_numpy(), method="bh")
    judged = [verdict(r.n_a, r.n_b, r.q, r.change_low, r.change_high, r.higher_is_better, q) for r in out.itertuples()]
    out["verdict"] = [v for v, _ in judged]
    out["why"] = [w for _, w in judged]
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


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value the exact Mann-Whitney U test can give for samples of n_a and n_b: every
    value of one side above every value of the other (pure)."""
    return min(1.0, 2 / math.comb(n_a + n_b, n_a)) if n_a and n_b else 1.0


def repetitions_to_tell(q: float) -> int:
    """The fewest repetitions per side (equal sides) at which the exact test can reach `q` (pure)."""
    n = 2
    while smallest_p(n, n) > q:
        n += 1
    return n


def verdict(n_a: int, n_b: int, qval: float, low: float, high: float, hib: Any, q: float) -> tuple[str, str]:
    """A cell's verdict and why, from its repetitions, q-value, change interval and direction (pure; see the
    module docstring). Significance needs the test (q-value at most `q`) and the interval (0 outside it) to agree."""
    if min(n_a, n_b) < 2 or smallest_p(n_a, n_b) > q:
        return TOO_FEW, (f"{n_a} against {n_b} repetitions cannot show a difference at q {q:g} (smallest possible p "
                         f"{smallest_p(n_a, n_b):.2g}); run at least {repetitions_to_tell(q)} per side")
    if pd.isna(qval) or qval > q:
        return NOT_SIGNIFICANT, f"q {qval:.2g} > {q:g}" if pd.notna(qval) else "no test"
    if pd.isna(low) or pd.isna(high) or low <= 0 <= high:
        return NOT_SIGNIFICANT, f"q {qval:.2g} but the interval [{percent(low)}, {percent(high)}] contains 0"
    if hib is None or pd.isna(hib):
        return CHANGED, f"q {qval:.2g}; the metric has no direction (unit and higher_is_better unknown)"
    return (BETTER if (low > 0) == bool(hib) else WORSE), f"q {qval:.2g}, interval excludes 0"


def percent(fraction: float, digits: int = 1) -> str:
    """A relative change for people: 0.05 -> '+5.0%' (empty for NaN)."""
    if fraction is None or pd.isna(fraction):
        return ""
    return f"{100 * fraction:+.{digits}f}%"


def cell_keys(result: pd.DataFrame) -> list[str]:
    """The columns of a comparison that name its cells (the metric and the matched parameters), in order."""
    cols = list(result.columns)
    return cols[:cols.index("n_a")]


def counts(result: pd.DataFrame) -> dict[str, int]:
    """Cells per verdict, every verdict named (pure)."""
    found = result["verdict"].value_counts()
    return {v: int(found.get(v, 0)) for v in VERDICT_ORDER}


def parameter_warnings(a: pd.DataFrame, b: pd.DataFrame, label_a: str, label_b: str,
                       ignore: Sequence[str] = ()) -> list[str]:
    """What the matching hides: parameter columns only one side has (a fixed parameter the other did not
    record), and values of a shared parameter only one side has (cells left out) (pure)."""
    a, b = as_pandas(a), as_pandas(b)
    skip = {"campaign", *ignore}
    pa, pb = [c for c in param_columns(a) if c not in skip], [c for c in param_columns(b) if c not in skip]
    out = []
    for cols, df, label, other in ((pa, a, label_a, set(pb)), (pb, b, label_b, set(pa))):
        for c in cols:
            if c not in other:
                values = ", ".join(sorted(map(str, df[c].dropna().unique())))
                out.append(f"parameter {c} ({values}) only in {label}: cells were matched without it")
    for c in (c for c in pa if c in set(pb)):
        va, vb = set(map(str, a[c].dropna().unique())), set(map(str, b[c].dropna().unique()))
        if va != vb:
            only = [f"{', '.join(sorted(v))} only in {lab}" for v, lab in ((va - vb, label_a), (vb - va, label_b)) if v]
            out.append(f"parameter {c} differs: {'; '.join(only)} (those cells are not compared)")
    return out


def version_warnings(pa: Mapping[str, Any], pb: Mapping[str, Any], label_a: str, label_b: str) -> list[str]:
    """Provenance that differs between the sides: the runner's version and commit (which carry the built-in
    workloads' sources, e.g. lockbench.c), the workload and its version when a dataset records one, the matrix's
    fixed workload parameters (a command's `run`, gmake's `source`) (pure; `pa`, `pb` as
    runner.records.store.read_campaign returns)."""
    out = []
    for key in ("workload", "workload_version", "runner_version", "git_commit"):
        va, vb = pa.get(key), pb.get(key)
        if va is not None and vb is not None and va != vb:
            out.append(f"{key} differs: {va} in {label_a}, {vb} in {label_b}")
    fa, fb = _fixed_params(pa.get("matrix")), _fixed_params(pb.get("matrix"))
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key) != fb.get(key):
            out.append(f"fixed parameter {key} differs: {fa.get(key, '(unset)')} in {label_a}, {fb.get(key, '(unset)')} in {label_b}")
    return out


def _fixed_params(matrix_text: Any) -> dict[str, Any]:
    """workload.params of a matrix text; {} when it is absent or does not parse (the data stays comparable)."""
    try:
        doc = yaml.safe_load(matrix_text) if isinstance(matrix_text, str) else None
        params = doc["workload"].get("params") if isinstance(doc, dict) and isinstance(doc.get("workload"), dict) else None
    except (yaml.YAMLError, AttributeError):
        return {}
    return dict(params) if isinstance(params, dict) else {}


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
