"""Per-cell statistics over a metrics table: median, IQR, spread, bootstrap intervals, repetitions needed.

Conventions used throughout runner.analysis:
- a *total* row has `thread` and `vm` both null; per-thread and per-VM rows are breakdowns of a total;
  rows with a `probe` are telemetry (runner.probes), never totals; rows with a `role` (canary runs, the drift
  watch of runner.analysis.drift) are re-runs of a cell, not repetitions of it, never totals either;
- the *parameters* of a row are `workload`, `env`, `accel` and the matrix axis columns (every column that is
  not one of the fixed schema fields); a *cell* is one set of parameters (the dataset's `cell_id`);
- spread is the interquartile range (IQR) of the repetitions of a cell; the relative spread is IQR / |median|;
- the 95% interval of a median is estimated robustly as median +- 1.96 * 1.2533 * (IQR / 1.349) / sqrt(n)
  (normal approximation of the median's standard error with a robust sigma), which needs no resampling and
  so is cheap for every cell of a large dataset; `bootstrap_ci` is there for exact work on a few cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from runner.errors import DatasetError
from runner.records.schema import METRIC_COLUMNS, ordinary_role

# Columns of the metrics table that are not matrix axes (said once, in runner.records.schema).
FIXED_COLUMNS = frozenset(METRIC_COLUMNS)
REQUIRED_COLUMNS = ("cell_id", "repetition", "metric", "value")
# Axes along which throughput is expected to scale, in order of preference.
SCALING_AXES = ("threads", "cores", "vcpus")
# Target of the relative CI half-width of a cell's median (5%).
DEFAULT_TARGET = 0.05
_Z95 = 1.959963984540054
_MEDIAN_SE = math.sqrt(math.pi / 2)  # SE(median) = 1.2533 sigma / sqrt(n) for a normal sample
_IQR_SIGMA = 1.3489795003921634  # IQR of a standard normal


def as_pandas(df: Any) -> pd.DataFrame:
    """Return `df` as a pandas DataFrame; polars frames are converted with .to_pandas()."""
    if isinstance(df, pd.DataFrame):
        return df
    to_pandas = getattr(df, "to_pandas", None)
    if to_pandas is None:
        raise DatasetError(f"expected a pandas or polars DataFrame, got {type(df).__name__}")
    return to_pandas()


def check_metrics(metrics: pd.DataFrame) -> None:
    """Raise DatasetError naming the first required column the metrics table lacks."""
    missing = [c for c in REQUIRED_COLUMNS if c not in metrics.columns]
    if missing:
        raise DatasetError(f"metrics table lacks column(s) {', '.join(missing)}; has {', '.join(map(str, metrics.columns))}")


def axis_columns(metrics: pd.DataFrame) -> list[str]:
    """Matrix axis columns of a metrics table: every column that is not a fixed schema field, in table order."""
    return [c for c in metrics.columns if c not in FIXED_COLUMNS]


def param_columns(metrics: pd.DataFrame) -> list[str]:
    """Columns that identify a cell's parameters: campaign, workload, env, accel (when present) and the axes.

    The campaign counts as a parameter so that frames of several campaigns concatenated are never pooled."""
    return [c for c in ("campaign", "workload", "env", "accel") if c in metrics.columns] + axis_columns(metrics)


def totals(metrics: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Rows that are the workload's totals (thread, vm and probe null: a probe's telemetry explains a
    result, it is not one; role null: a canary run is not a repetition of its cell), optionally of one
    metric only."""
    mask = np.ones(len(metrics), dtype=bool)
    for col in ("thread", "vm", "probe"):
        if col in metrics.columns:
            mask &= metrics[col].isna().to_numpy()
    if "role" in metrics.columns:  # trial (null before schema version 6), not canary
        mask &= ordinary_role(metrics["role"])
    if metric is not None:
        mask &= (metrics["metric"] == metric).to_numpy()
    return metrics[mask]


def scaling_axis(metrics: pd.DataFrame) -> str | None:
    """The scaling axis of a table: the first of threads, cores, vcpus that is numeric with 2+ distinct values."""
    for name in SCALING_AXES:
        if name in metrics.columns and pd.api.types.is_numeric_dtype(metrics[name]) and metrics[name].nunique() > 1:
            return name
    return None


def relative_halfwidth(half: np.ndarray | float, median: np.ndarray | float) -> np.ndarray:
    """An interval's half-width relative to |median|: inf at a median of 0 with a nonzero half-width, 0 when
    both are 0 (every value the same), nan where either is unknown."""
    half_arr, med = np.asarray(half, dtype=float), np.abs(np.asarray(median, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where((med == 0) & (half_arr == 0), 0.0, half_arr / med)


def robust_ci_halfwidth(iqr: np.ndarray | float, n: np.ndarray | int) -> np.ndarray:
    """Half-width of the 95% interval of a median from the IQR of n values (see the module docstring)."""
    n_arr = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _Z95 * _MEDIAN_SE * (np.asarray(iqr, dtype=float) / _IQR_SIGMA) / np.sqrt(n_arr)


def repetitions_needed(rel_halfwidth: np.ndarray | float, n: np.ndarray | int, target: float = DEFAULT_TARGET) -> np.ndarray:
    """Repetitions for the median's relative CI half-width to reach `target`, as the half-width falls with 1/sqrt(n).

    Returns n itself where the target is already met, and -1 where it cannot be estimated (n < 2, no spread info,
    or a median so close to 0 that no count of repetitions would do: more than 2**53).
    """
    rel = np.asarray(rel_halfwidth, dtype=float)
    n_arr = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        need = np.ceil(n_arr * (rel / target) ** 2)
    need = np.where(np.isfinite(need) & (need <= 2.0**53), np.maximum(need, n_arr), -1)
    need = np.where(n_arr < 2, -1, need)
    return need.astype(np.int64)


def cell_stats(metrics: Any, *, metric: str | None = None, target: float = DEFAULT_TARGET) -> pd.DataFrame:
    """Median and spread of the totals of every cell and metric.

    One row per (cell_id, metric) with the cell's parameter columns, `unit`, `higher_is_better`, `n`
    (repetitions), `median`, `mean`, `q1`, `q3`, `min`, `max`, `iqr`, `rel_iqr`, `ci_low`, `ci_high` (95% interval
    of the median), `ci_rel` (its half-width relative to the median), `hosts` (distinct hosts), `wide` (ci_rel >
    target) and `reps_needed` (repetitions to bring ci_rel to `target`; -1 if it cannot be estimated).
    """
    metrics = as_pandas(metrics)
    check_metrics(metrics)
    tot = totals(metrics, metric)
    tot = tot[np.isfinite(tot["value"].to_numpy(dtype=float, na_value=np.nan))]
    params = param_columns(metrics)
    keys = (["campaign"] if "campaign" in tot.columns else []) + ["cell_id", "metric"]
    extra = [c for c in ("unit", "higher_is_better") if c in tot.columns]
    if tot.empty:
        return pd.DataFrame(columns=keys + params + extra + ["n", "median", "q1", "q3", "iqr", "rel_iqr"])
    grouped = tot.groupby(keys, sort=True, observed=True)["value"]
    out = grouped.agg(n="count", median="median", mean="mean", min="min", max="max")
    out["q1"] = grouped.quantile(0.25)
    out["q3"] = grouped.quantile(0.75)
    if "host" in tot.columns:
        out["hosts"] = tot.groupby(keys, sort=True, observed=True)["host"].nunique()
    out = out.reset_index()
    first = tot.drop_duplicates(keys)[keys + [c for c in params + extra if c not in keys]]
    out = first.merge(out, on=keys, how="right")
    out["iqr"] = out["q3"] - out["q1"]
    med = out["median"].to_numpy(dtype=float)
    absmed = np.abs(med)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a median of 0 or a denormal: inf
        out["rel_iqr"] = out["iqr"].to_numpy(dtype=float) / absmed
        half = robust_ci_halfwidth(out["iqr"].to_numpy(dtype=float), out["n"].to_numpy())
        out["ci_low"] = med - half
        out["ci_high"] = med + half
        out["ci_rel"] = relative_halfwidth(half, med)
    out["wide"] = (out["ci_rel"] > target).fillna(False).astype(bool) & (out["n"] >= 2)
    out["reps_needed"] = repetitions_needed(out["ci_rel"].to_numpy(dtype=float), out["n"].to_numpy(), target)
    return out


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[..., np.ndarray] = np.median,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `values`, vectorised: the one bootstrap of runner.analysis.

    `values` is one sample, or a tuple of 1-d arrays, independent samples (each resampled on its own, in order, from one
    random stream): `stat` gets one array of shape (n_boot, len(sample)) per sample and `axis=1`, and returns
    one value per replicate, e.g. np.median, or `lambda a, b, axis: np.median(b, axis) / np.median(a, axis)`.
    `seed` may be a numpy Generator, to draw several intervals from one stream (as compare does)."""
    several = isinstance(values, tuple) and len(values) > 0 and all(np.ndim(v) == 1 for v in values)
    samples = tuple(np.asarray(v, dtype=float) for v in values) if several else (np.asarray(values, dtype=float).ravel(),)
    if any(x.size == 0 for x in samples):
        raise DatasetError("bootstrap_ci: no values")
    rng = np.random.default_rng(seed)
    resampled = [resample(x, n_boot, rng) for x in samples]
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = stat(*resampled, axis=1)
        lo, hi = percentile_interval(reps, level)
    return float(lo), float(hi)


def resample(x: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """`replicates` rows of len(x) values of `x` drawn with replacement (the bootstrap's one draw)."""
    return x[rng.integers(0, x.size, size=(replicates, x.size))]


def resample_within(groups: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Index matrix (replicates x m): positions drawn with replacement within each distinct value of `groups`."""
    idx = np.empty((replicates, groups.size), dtype=np.int64)
    for lv in np.unique(groups):
        pos = np.flatnonzero(groups == lv)
        idx[:, pos] = resample(pos, replicates, rng)
    return idx


def percentile_interval(replicates: np.ndarray, level: float) -> np.ndarray:
    """The percentile bootstrap interval (low, high) at `level` of the replicates (along the first axis)."""
    return np.quantile(replicates, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)


def spread_by_level(n: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    """Median, quartiles, min, max and count of `x` at each distinct level of `n` (sorted by n)."""
    n_arr = np.asarray(n, dtype=float)
    x_arr = np.asarray(x, dtype=float)
    order = np.lexsort((x_arr, n_arr))
    n_arr, x_arr = n_arr[order], x_arr[order]
    levels, start, count = np.unique(n_arr, return_index=True, return_counts=True)
    stats = np.array([np.quantile(x_arr[s:s + c], [0.0, 0.25, 0.5, 0.75, 1.0]) for s, c in zip(start, count)])
    return pd.DataFrame({"n": levels, "count": count, "median": stats[:, 2], "min": stats[:, 0], "max": stats[:, 4],
                         "q1": stats[:, 1], "q3": stats[:, 3]})


def slice_columns(metrics: pd.DataFrame, axis: str) -> list[str]:
    """Columns that name a slice along `axis`: metric and every parameter column except the axis itself."""
    return ["metric"] + [c for c in param_columns(metrics) if c != axis]


def load_totals(metrics: Any, axis: str | None, metric: str | None) -> tuple[str, pd.DataFrame]:
    """The load axis (given or detected) and the total rows with a value, checked: what every per-slice table starts from."""
    metrics = as_pandas(metrics)
    check_metrics(metrics)
    axis = axis or scaling_axis(metrics)
    if axis is None or axis not in metrics.columns:
        raise DatasetError(f"no scaling axis {axis or '(threads, cores, vcpus)'} in the metrics table")
    tot = totals(metrics, metric)
    return axis, tot[tot["value"].notna()]


def iter_slices(tot: pd.DataFrame, axis: str) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Split total rows into slices along `axis`: [(slice parameters, rows sorted by axis)], in a stable order.

    Null parameter values (an axis that does not apply to some rows) are kept as their own slice value."""
    keys = slice_columns(tot, axis)
    out = []
    for key, rows in tot.groupby(keys, sort=True, dropna=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        out.append((dict(zip(keys, key)), rows.sort_values(axis, kind="stable")))
    return out


def slice_label(params: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """Short human label of a slice: 'lock=ticket env=kvm accel=tcg' (null values left out)."""
    parts = []
    for k, v in params.items():
        if k in skip or v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        parts.append(f"{k}={v}")
    return " ".join(parts)
