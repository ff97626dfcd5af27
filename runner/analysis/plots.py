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

from runner.analysis.collapse import Collapse
from runner.analysis.usl import UslFit

DPI = 80


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


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def scaling(path: Path, series: Sequence[Series], *, axis: str, ylabel: str, title: str) -> Path:
    """Left: throughput vs load, median line and IQR band per variant, fitted USL dashed (faint when poor),
    collapse points marked x. Right: speedup X(N)/X(N0) and efficiency X(N) N0 / (N X(N0)), N0 the smallest load."""
    fig = Figure(figsize=(10.0, 4.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.11, top=0.92, wspace=0.22, hspace=0.12)
    grid = fig.add_gridspec(2, 2, width_ratios=(1.5, 1.0))
    ax = fig.add_subplot(grid[:, 0])
    ax_s = fig.add_subplot(grid[0, 1])
    ax_e = fig.add_subplot(grid[1, 1], sharex=ax_s)
    for i, s in enumerate(series):
        color = f"C{i % 10}"
        ax.plot(s.levels, s.median, "o-", color=color, ms=3, lw=1.2, label=s.label)
        ax.fill_between(s.levels, s.q1, s.q3, color=color, alpha=0.2, lw=0)
        if s.fit is not None:
            xs = np.linspace(max(s.levels.min(), 1e-9), s.levels.max(), 120)
            ax.plot(xs, s.fit.predict(xs), "--", color=color, lw=0.9, alpha=0.4 if s.fit.poor_fit else 0.9)
        if s.collapse is not None and s.collapse.collapsed:
            ax.plot([s.collapse.collapse_n], [s.collapse.collapse_x], "x", color=color, ms=9, mew=2)
        if s.median[0]:
            sp = s.median / s.median[0]
            ax_s.plot(s.levels, sp, "o-", color=color, ms=2, lw=1)
            ax_e.plot(s.levels, sp * s.levels[0] / s.levels, "o-", color=color, ms=2, lw=1)
    if series:
        lv = series[0].levels
        ax_s.plot(lv, lv / lv[0], ":", color="grey", lw=1)
        ax.legend(fontsize=6, loc="upper left")
    ax_e.axhline(1.0, ls=":", color="grey", lw=1)
    medians = np.concatenate([s.median[s.median > 0] for s in series]) if series else np.array([])
    if medians.size and medians.max() / medians.min() > 100:  # a collapse spans decades: show them all
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set_xlabel(axis)
    ax.set_ylabel(ylabel)
    ax_s.set_ylabel("speedup", fontsize=8)
    ax_e.set_ylabel("efficiency", fontsize=8)
    ax_e.set_xlabel(axis)
    fig.suptitle(title, fontsize=9)
    for a in (ax, ax_s, ax_e):
        a.grid(alpha=0.3)
        if a.get_yscale() == "linear":
            a.set_ylim(bottom=0)
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
    """Aggregate efficiency vs k (ideal 1) and Jain's fairness index vs k (fair 1, unfair 1/k)."""
    fig = Figure(figsize=(7.0, 5.0))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.09, top=0.94, hspace=0.1)
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
    ax_e.legend(fontsize=6, loc="lower left")
    ax_j.legend(fontsize=6, loc="lower left")
    for ax in (ax_e, ax_j):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    return _save(fig, path)
