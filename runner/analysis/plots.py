"""PNG figures for the report. Each function draws precomputed data and writes one file; no statistics here.

Figures are built with matplotlib's object API (matplotlib.figure.Figure), which renders with the Agg backend
and never touches pyplot's global state, so reports can be built from threads and headless machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from runner.analysis.collapse import Collapse
from runner.analysis.usl import UslFit

DPI = 80
LEGEND_COLUMNS = 4  # legends sit below the axes, out of the data, in rows of this many entries
LEGEND_ROW_IN = 0.16  # height of one legend row (fontsize 6), inches


@dataclass(frozen=True)
class Series:
    """One variant along the load axis: medians with their IQR band, and optionally its fit and collapse."""

    label: str
    levels: np.ndarray
    median: np.ndarray
    q1: np.ndarray
    q3: np.ndarray
    fit: UslFit | None = None
    collapse: Collapse | None = None


def _integer_ticks(ax, values: Sequence[np.ndarray]) -> None:
    """Ticks at whole numbers only when every load is a whole number (threads, cores, VMs): no 2.5 threads."""
    vals = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else np.array([])
    if vals.size and np.all(np.isfinite(vals)) and np.all(vals == np.round(vals)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_below(fig: Figure, handles: list, labels: list[str], height_in: float, axes_bottom_in: float) -> float:
    """A legend under the axes, outside the data (fig.legend); returns the axes' bottom as a figure fraction."""
    rows = -(-len(labels) // LEGEND_COLUMNS) if labels else 0
    if rows:
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.005), ncol=min(LEGEND_COLUMNS, len(labels)),
                   fontsize=6, frameon=False)
    return (axes_bottom_in + rows * LEGEND_ROW_IN) / height_in


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def scaling(path: Path, series: Sequence[Series], *, axis: str, ylabel: str, title: str, speedup: bool = True) -> Path:
    """Left: the metric vs load, median line and IQR band per variant, fitted USL dashed (faint when poor),
    collapse points marked x. Right (only with `speedup`, for metrics that scale like a throughput): speedup
    X(N)/X(N0) and efficiency X(N) N0 / (N X(N0)), N0 the smallest load. The legend sits below the axes."""
    rows = -(-len(series) // LEGEND_COLUMNS)
    height = 4.4 + rows * LEGEND_ROW_IN
    fig = Figure(figsize=(10.0 if speedup else 6.5, height))
    ax_s = ax_e = None
    if speedup:
        grid = fig.add_gridspec(2, 2, width_ratios=(1.5, 1.0))
        ax = fig.add_subplot(grid[:, 0])
        ax_s = fig.add_subplot(grid[0, 1])
        ax_e = fig.add_subplot(grid[1, 1], sharex=ax_s)
    else:
        ax = fig.add_subplot()
    for i, s in enumerate(series):
        color = f"C{i % 10}"
        ax.plot(s.levels, s.median, "o-", color=color, ms=3, lw=1.2, label=s.label)
        ax.fill_between(s.levels, s.q1, s.q3, color=color, alpha=0.2, lw=0)
        if s.fit is not None:
            xs = np.linspace(max(s.levels.min(), 1e-9), s.levels.max(), 120)
            ax.plot(xs, s.fit.predict(xs), "--", color=color, lw=0.9, alpha=0.4 if s.fit.poor_fit else 0.9)
        if s.collapse is not None and s.collapse.collapsed:
            ax.plot([s.collapse.collapse_n], [s.collapse.collapse_x], "x", color=color, ms=9, mew=2)
        if ax_s is not None and ax_e is not None and s.median[0]:
            sp = s.median / s.median[0]
            ax_s.plot(s.levels, sp, "o-", color=color, ms=2, lw=1)
            ax_e.plot(s.levels, sp * s.levels[0] / s.levels, "o-", color=color, ms=2, lw=1)
    handles, labels = ax.get_legend_handles_labels()
    bottom = _legend_below(fig, handles, labels, height, 0.55)
    fig.subplots_adjust(left=0.07 if speedup else 0.1, right=0.98, bottom=bottom, top=0.92, wspace=0.22, hspace=0.12)
    levels = [s.levels for s in series]
    _integer_ticks(ax, levels)
    if ax_s is not None and ax_e is not None:
        if series:
            lv = series[0].levels
            ax_s.plot(lv, lv / lv[0], ":", color="grey", lw=1)
        ax_e.axhline(1.0, ls=":", color="grey", lw=1)
        _integer_ticks(ax_e, levels)
    medians = np.concatenate([s.median[s.median > 0] for s in series]) if series else np.array([])
    if medians.size and medians.max() / medians.min() > 100:  # a collapse spans decades: show them all
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set_xlabel(axis)
    ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=9)
    for a in (ax, ax_s, ax_e):
        if a is None:
            continue
        a.grid(alpha=0.3)
        if a.get_yscale() == "linear":
            a.set_ylim(bottom=0)
    if ax_s is not None and ax_e is not None:
        ax_s.set_ylabel("speedup", fontsize=8)
        ax_e.set_ylabel("efficiency", fontsize=8)
        ax_e.set_xlabel(axis)
        ax_s.tick_params(labelbottom=False, labelsize=7)
        ax_e.tick_params(labelsize=7)
    return _save(fig, path)


@dataclass(frozen=True)
class OvercommitSeries:
    """One variant along the number of VMs k: aggregate efficiency (median, IQR) and Jain's index."""

    label: str
    k: np.ndarray
    efficiency: np.ndarray
    efficiency_q1: np.ndarray
    efficiency_q3: np.ndarray
    jain: np.ndarray


def overcommit(path: Path, series: Sequence[OvercommitSeries], *, title: str) -> Path:
    """Aggregate efficiency vs k (ideal 1) and Jain's fairness index vs k (fair 1, unfair 1/k); the legend
    (variants and reference lines) sits below the axes, k ticks are whole numbers."""
    rows = -(-(len(series) + 2) // LEGEND_COLUMNS)
    height = 5.0 + rows * LEGEND_ROW_IN
    fig = Figure(figsize=(7.0, height))
    ax_e, ax_j = fig.subplots(2, 1, sharex=True)
    kmax = 1
    for i, s in enumerate(series):
        color = f"C{i % 10}"
        ax_e.errorbar(s.k, s.efficiency, yerr=[s.efficiency - s.efficiency_q1, s.efficiency_q3 - s.efficiency],
                      fmt="o-", color=color, ms=3, lw=1.2, capsize=2, label=s.label)
        ax_j.plot(s.k, s.jain, "o-", color=color, ms=3, lw=1.2)
        kmax = max(kmax, int(np.max(s.k)))
    ks = np.arange(1, kmax + 1)
    ax_e.axhline(1.0, ls=":", color="grey", lw=1, label="ideal")
    ax_j.plot(ks, 1.0 / ks, ":", color="grey", lw=1, label="1/k (one VM gets all)")
    ax_j.axhline(1.0, ls=":", color="grey", lw=1)
    ax_e.set_ylabel("aggregate efficiency")
    ax_j.set_ylabel("Jain's index")
    ax_j.set_xlabel("VMs sharing the cores (k)")
    ax_e.set_title(title, fontsize=9)
    handles, labels = ax_e.get_legend_handles_labels()
    more_h, more_l = ax_j.get_legend_handles_labels()
    bottom = _legend_below(fig, handles + more_h, labels + more_l, height, 0.6)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=bottom, top=0.94, hspace=0.1)
    _integer_ticks(ax_j, [np.arange(1, kmax + 1)])
    for ax in (ax_e, ax_j):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    return _save(fig, path)


@dataclass(frozen=True)
class CanarySeries:
    """One host's canary runs over time, with the range of its reference runs (drift rule, runner.analysis.drift)."""

    host: str
    minutes: np.ndarray  # since the campaign's first trial (or run numbers when the times are unknown)
    values: np.ndarray
    reference: int  # the first `reference` runs make the band (0: too few runs to judge)
    ref_low: float
    ref_high: float
    last: int  # the last `last` runs are judged
    drifted: bool | None


def canary(path: Path, series: Sequence[CanarySeries], *, ylabel: str, title: str, xlabel: str = "minutes since the first trial") -> Path:
    """The canary's metric over time, one line per host; shaded: the range of its reference runs, the
    band the last runs are judged against; the judged runs are ringed, in red when the host drifted."""
    rows = -(-len(series) // LEGEND_COLUMNS)
    height = 3.6 + rows * LEGEND_ROW_IN
    fig = Figure(figsize=(7.0, height))
    ax = fig.add_subplot()
    for i, s in enumerate(series):
        color = f"C{i % 10}"
        label = s.host + (" (drifted)" if s.drifted else "")
        ax.plot(s.minutes, s.values, "o-", color=color, ms=3, lw=1.0, label=label)
        if s.reference and len(s.minutes):
            ax.fill_between([s.minutes[0], s.minutes[-1]], s.ref_low, s.ref_high, color=color, alpha=0.12, lw=0)
            ax.plot(s.minutes[:s.reference], s.values[:s.reference], "s", color=color, ms=4, mfc="none")
            edge = "red" if s.drifted else color
            ax.plot(s.minutes[-s.last:], s.values[-s.last:], "o", ms=8, mfc="none", mec=edge, mew=1.2)
    handles, labels = ax.get_legend_handles_labels()
    bottom = _legend_below(fig, handles, labels, height, 0.55)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=bottom, top=0.9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    return _save(fig, path)
