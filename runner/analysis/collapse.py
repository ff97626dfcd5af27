"""Collapse detection along a load axis (threads, cores, vCPUs).

A sudden drop is not USL-shaped, so it is detected directly (science.md): the collapse point is the first N
past the peak where throughput stays below (1 - d) of the peak for all larger N. The peak is the level with the
highest median; a level counts as "below" only when the *upper end of its repetition spread* (the largest
repetition by default, or the upper quartile) is below (1 - d) x the peak median, so a single noisy low
repetition cannot fake a collapse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis.stats import iter_slices, load_totals, spread_by_level
from runner.errors import DatasetError

DEFAULT_DROP = 0.2
BANDS = ("max", "q3")


@dataclass(frozen=True)
class Collapse:
    """Peak and collapse point of one slice. collapse_n is NaN when there is no collapse."""

    peak_n: float
    peak_x: float  # median at the peak
    collapsed: bool
    collapse_n: float
    collapse_x: float  # median at the collapse point (NaN without collapse)
    drop: float  # 1 - collapse_x / peak_x (NaN without collapse)
    last_n: float  # largest load measured
    last_ratio: float  # median at the largest load / peak median
    d: float
    band: str
    n_levels: int


def detect_collapse(n, x, *, d: float = DEFAULT_DROP, band: str = "max") -> Collapse:
    """Find the peak and the collapse point of throughputs `x` (one per repetition) at loads `n`."""
    if not 0 < d < 1:
        raise DatasetError(f"detect_collapse: d must be in (0, 1), got {d}")
    if band not in BANDS:
        raise DatasetError(f"detect_collapse: unknown band {band!r}; known: {', '.join(BANDS)}")
    n_arr = np.asarray(n, dtype=float).ravel()
    x_arr = np.asarray(x, dtype=float).ravel()
    ok = np.isfinite(n_arr) & np.isfinite(x_arr)
    if not ok.any():
        raise DatasetError("detect_collapse: no finite points")
    lv = spread_by_level(n_arr[ok], x_arr[ok])
    med = lv["median"].to_numpy()
    upper = lv[band].to_numpy()
    levels = lv["n"].to_numpy()
    ip = int(np.argmax(med))
    peak_x = float(med[ip])
    below = upper < (1 - d) * peak_x
    # stays_below[i]: every level from i on is below the threshold
    stays_below = np.flip(np.logical_and.accumulate(np.flip(below)))
    after = np.flatnonzero(stays_below[ip + 1:])
    collapsed = after.size > 0
    ic = ip + 1 + int(after[0]) if collapsed else -1
    cx = float(med[ic]) if collapsed else math.nan
    return Collapse(
        peak_n=float(levels[ip]), peak_x=peak_x, collapsed=collapsed,
        collapse_n=float(levels[ic]) if collapsed else math.nan, collapse_x=cx,
        drop=1 - cx / peak_x if collapsed and peak_x else math.nan,
        last_n=float(levels[-1]), last_ratio=float(med[-1] / peak_x) if peak_x else math.nan,
        d=d, band=band, n_levels=int(levels.size),
    )


@dataclass(frozen=True)
class CpuSplit:
    """A slice's drops told apart by the CPU count of the machine the load ran on (science.md: a lock's
    throughput falls with contention while threads fit the CPUs, and collapses past them, when a lock holder
    or waiter is preempted). `contention`: detect_collapse over the loads at or below the CPU count;
    `past`: detect_collapse from the largest load at or below the CPU count on (its peak is there or later), so
    a drop at 2 threads on 2 cores no longer hides the collapse at 3. Either is None when it has too few loads."""

    cpus: float
    contention: Collapse | None
    past: Collapse | None

    def main(self) -> Collapse | None:
        """The collapse that matters: past the CPU count when there is one, else the drop with contention."""
        if self.past is not None and self.past.collapsed:
            return self.past
        if self.contention is not None and self.contention.collapsed:
            return self.contention
        return None


def split_at_cpus(n, x, cpus: float, *, d: float = DEFAULT_DROP, band: str = "max") -> CpuSplit:
    """detect_collapse on both sides of the CPU count `cpus` (see CpuSplit)."""
    n_arr = np.asarray(n, dtype=float).ravel()
    x_arr = np.asarray(x, dtype=float).ravel()
    levels = np.unique(n_arr[np.isfinite(n_arr)])
    inside = levels[levels <= cpus]
    contention = detect_collapse(n_arr[n_arr <= cpus], x_arr[n_arr <= cpus], d=d, band=band) if inside.size >= 2 else None
    start = inside.max() if inside.size else -np.inf
    keep = n_arr >= start
    past = detect_collapse(n_arr[keep], x_arr[keep], d=d, band=band) \
        if (levels > cpus).any() and np.unique(n_arr[keep]).size >= 2 else None
    return CpuSplit(float(cpus), contention, past)


def collapse_table(metrics: Any, *, axis: str | None = None, metric: str | None = None,
                   d: float = DEFAULT_DROP, band: str = "max") -> pd.DataFrame:
    """detect_collapse on every slice of the totals along `axis` (auto-detected when None): one row per slice."""
    axis, tot = load_totals(metrics, axis, metric)
    rows = []
    for params, rows_df in iter_slices(tot, axis):
        if rows_df[axis].nunique() < 2:
            continue
        c = detect_collapse(rows_df[axis].to_numpy(dtype=float), rows_df["value"].to_numpy(dtype=float), d=d, band=band)
        rows.append({**params, "axis": axis, **c.__dict__})
    return pd.DataFrame(rows)
