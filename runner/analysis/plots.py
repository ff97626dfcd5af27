"""PNG figures for the report. Each function draws precomputed data and writes one file; no statistics here.

Figures are drawn at twice the resolution they are shown at (SCALE: sharp on high-density screens and when
zoomed), with legends and tick labels of at least 8 pt at that size; `shown_width(path)` is the width in CSS
pixels the report gives the <img>. The load axis of a scaling figure marks the CPU count of the machine the
load ran on (the host, or the guest's vCPUs) with a dotted vertical line.

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

DPI = 100  # CSS pixels per inch of a figure as the report shows it (8 pt: 11 px)
SCALE = 2  # PNGs are drawn at SCALE x DPI
LEGEND_COLUMNS = 4  # legends sit below the axes, out of the data, in rows of up to this many entries
LEGEND_FONT = 8  # points
LEGEND_ROW_IN = 0.2  # height of one legend row (LEGEND_FONT), inches


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
    cpus: tuple[float, str] | None = None  # the CPU count the load ran on and what it counts (host CPUs, guest vCPUs)


def _integer_ticks(ax, values: Sequence[np.ndarray]) -> None:
    """Ticks at whole numbers only when every load is a whole number (threads, cores, VMs): no 2.5 threads."""
    vals = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else np.array([])
    if vals.size and np.all(np.isfinite(vals)) and np.all(vals == np.round(vals)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_shape(labels: Sequence[str], width_in: float) -> tuple[int, int]:
    """(columns, rows) of a legend of `labels` below axes `width_in` wide: as many columns (up to LEGEND_COLUMNS)
    as the longest label allows, so no entry runs off the figure."""
    if not labels:
        return 1, 0
    entry_pt = max(len(str(lb)) for lb in labels) * LEGEND_FONT * 0.55 + 30  # text plus the line sample
    ncol = max(1, min(LEGEND_COLUMNS, len(labels), int(width_in * 72 // entry_pt)))
    return ncol, -(-len(labels) // ncol)


def _legend_below(fig: Figure, handles: list, labels: list[str], height_in: float, axes_bottom_in: float) -> float:
    """A legend under the axes, outside the data (fig.legend); returns the axes' bottom as a figure fraction."""
    ncol, rows = _legend_shape(labels, float(fig.get_figwidth()))
    if rows:
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.005), ncol=ncol,
                   fontsize=LEGEND_FONT, frameon=False)
    return (axes_bottom_in + rows * LEGEND_ROW_IN) / height_in


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI * SCALE)
    return path


def shown_width(path: Path) -> int:
    """Width in CSS pixels at which the report shows the PNG at `path` (drawn at SCALE x its shown size)."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    return int.from_bytes(head[16:20], "big") // SCALE


def _mark_cpus(ax, cpus: Sequence[tuple[float, str]]) -> None:
    """Dotted vertical lines at the CPU counts (value, what: 'host CPUs', 'guest vCPUs'), labelled at the top."""
    lo, hi = ax.get_xlim()
    for value, what in sorted(set(cpus)):
        ax.axvline(value, ls=":", color="black", lw=1.0, alpha=0.7)
        left = value > (lo + hi) / 2  # a line at the right end (the CPU count is the largest load): label inside
        ax.annotate(f"{value:g} {what}", xy=(value, 1.0), xycoords=("data", "axes fraction"), xytext=(-3 if left else 3, -10),
                    textcoords="offset points", fontsize=8, color="black", alpha=0.8, ha="right" if left else "left")


def scaling(path: Path, series: Sequence[Series], *, axis: str, ylabel: str, title: str, speedup: bool = True) -> Path:
    """Left: the metric vs load, median line and IQR band per variant, fitted USL dashed (faint when poor),
    collapse points marked x. Right (only with `speedup`, for metrics that scale like a throughput): speedup
    X(N)/X(N0) and efficiency X(N) N0 / (N X(N0)), N0 the smallest load. The legend sits below the axes."""
    width = 10.0 if speedup else 6.5
    height = 4.6 + _legend_shape([s.label for s in series], width)[1] * LEGEND_ROW_IN
    fig = Figure(figsize=(width, height))
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
    fig.subplots_adjust(left=0.08 if speedup else 0.12, right=0.98, bottom=bottom, top=0.92, wspace=0.22, hspace=0.12)
    levels = [s.levels for s in series]
    _integer_ticks(ax, levels)
    _mark_cpus(ax, [s.cpus for s in series if s.cpus is not None])
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
    fig.suptitle(title, fontsize=10)
    for a in (ax, ax_s, ax_e):
        if a is None:
            continue
        a.grid(alpha=0.3)
        if a.get_yscale() == "linear":
            a.set_ylim(bottom=0)
    if ax_s is not None and ax_e is not None:
        ax_s.set_ylabel("speedup", fontsize=9)
        ax_e.set_ylabel("efficiency", fontsize=9)
        ax_e.set_xlabel(axis)
        ax_s.tick_params(labelbottom=False, labelsize=8)
        ax_e.tick_params(labelsize=8)
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
    height = 5.0 + _legend_shape([s.label for s in series] + ["1/k (one VM gets all)"] * 2, 7.0)[1] * LEGEND_ROW_IN
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
    ax_e.set_title(title, fontsize=10)
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
    height = 3.6 + _legend_shape([s.host + " (drifted)" for s in series], 7.0)[1] * LEGEND_ROW_IN
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
    return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)


def _finish(fig: Figure, ax, path: Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """Label one set of axes, grid it, start its y axis at 0 and save the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    return _save(fig, path)


@dataclass(frozen=True)
class Line:
    """One line of a finding's figure: a metric normalised to its value at the smallest load, per load."""

    label: str
    levels: np.ndarray
    ratio: np.ndarray  # median at each load / median at the smallest load
    low: np.ndarray  # the same of the lower and upper quartiles
    high: np.ndarray


def normalised(path: Path, lines: Sequence[Line], *, axis: str, ylabel: str, title: str,
               cpus: Sequence[tuple[float, str]] = ()) -> Path:
    """Throughput normalised to the smallest load against the load, one line per variant (environment or guest
    kernel), quartile band, the ideal (linear) dotted, the CPU counts marked; legend below."""
    height = 4.4 + _legend_shape([line.label for line in lines] + ["linear (ideal)"], 7.5)[1] * LEGEND_ROW_IN
    fig = Figure(figsize=(7.5, height))
    ax = fig.add_subplot()
    for i, line in enumerate(lines):
        color = f"C{i % 10}"
        ax.plot(line.levels, line.ratio, "o-" if i < 10 else "s--", color=color, ms=4, lw=1.4, label=line.label)
        ax.fill_between(line.levels, line.low, line.high, color=color, alpha=0.15, lw=0)
    if lines:
        lv = np.unique(np.concatenate([line.levels for line in lines]).astype(float))
        ax.plot(lv, lv / lv[0], ":", color="grey", lw=1, label="linear (ideal)")
    handles, labels = ax.get_legend_handles_labels()
    bottom = _legend_below(fig, handles, labels, height, 0.55)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=bottom, top=0.9)
    _integer_ticks(ax, [line.levels for line in lines])
    _mark_cpus(ax, cpus)
    return _finish(fig, ax, path, xlabel=axis, ylabel=ylabel, title=title)


@dataclass(frozen=True)
class Bars:
    """One variant (a guest kernel) of the over-commit finding: efficiency and Jain's index per k."""

    label: str
    k: np.ndarray
    efficiency: np.ndarray
    jain: np.ndarray


def overcommit_bars(path: Path, bars: Sequence[Bars], *, title: str) -> Path:
    """Over-commit efficiency (sum over k VMs / 1 VM, ideal 1) and Jain's index (fair 1, one VM gets all 1/k)
    as grouped bars: a group per k, a bar per variant."""
    ks = np.unique(np.concatenate([b.k for b in bars]).astype(int)) if bars else np.array([1])
    height = 5.0 + _legend_shape([b.label for b in bars] + ["ideal: efficiency 1, Jain 1", "Jain 1/k: one VM gets all"],
                                 7.5)[1] * LEGEND_ROW_IN
    fig = Figure(figsize=(7.5, height))
    ax_e, ax_j = fig.subplots(1, 2)
    width = 0.8 / max(1, len(bars))
    pos = {k: i for i, k in enumerate(ks)}
    for i, b in enumerate(bars):
        x = np.array([pos[int(k)] for k in b.k]) - 0.4 + width * (i + 0.5)
        ax_e.bar(x, b.efficiency, width, color=f"C{i % 10}", label=b.label)
        ax_j.bar(x, b.jain, width, color=f"C{i % 10}")
    ax_e.axhline(1.0, ls=":", color="grey", lw=1, label="ideal: efficiency 1, Jain 1")
    ax_j.axhline(1.0, ls=":", color="grey", lw=1)
    ax_j.plot(np.arange(len(ks)), 1.0 / ks, "_", color="black", ms=18, mew=1.5, label="Jain 1/k: one VM gets all")
    for ax, name in ((ax_e, "over-commit efficiency (sum of k VMs / 1 VM)"), (ax_j, "Jain's index over the VMs")):
        ax.set_xticks(np.arange(len(ks)), [str(k) for k in ks])
        ax.set_xlabel("VMs sharing the cores (k)")
        ax.set_ylabel(name, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.set_ylim(bottom=0)
    handles, labels = ax_e.get_legend_handles_labels()
    more_h, more_l = ax_j.get_legend_handles_labels()
    bottom = _legend_below(fig, handles + more_h, labels + more_l, height, 0.6)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=bottom, top=0.9, wspace=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
