"""The report's scaling sections: per metric and slice along the load axis, the medians and spread, a USL fit
and the collapse point (both sides of the CPU count), drawn and tabled; and for every collapse found, the figures at
the load before it and at it (runner.analysis.explain)."""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis import plots
from runner.analysis.axes import label as _label, shown
from runner.analysis.collapse import Collapse, CpuSplit, detect_collapse, split_at_cpus
from runner.analysis.explain import explain_collapse, explained_rows
from runner.analysis.findings import cpu_count, is_vm_env, nested_hosts
from runner.analysis.fmt import fitted
from runner.analysis.page import Page, _ci, _fmt, _label_columns, _table
from runner.analysis.report_hosts import _facts_differ
from runner.analysis.stats import iter_slices, slice_columns, spread_by_level
from runner.analysis.usl import UslFit, fit_usl


LINES_PER_FIGURE = 8


def _peak(fit: UslFit) -> tuple[str, str]:
    """(peak N*, X(N*)) as the fit table shows them: no peak when the curve falls from N = 1 on (N* < 1) or
    keeps rising (no coherency cost)."""
    if math.isinf(fit.peak_n) and fitted(fit.sigma) == "0":
        return "none (linear scaling)", ""
    if math.isinf(fit.peak_n):
        return "none (no coherency cost)", (f"ceiling {fitted(fit.peak_x)}" if math.isfinite(fit.peak_x) else "")
    if fit.peak_n < 1:
        return "no peak (N* < 1: falls from N = 1 on)", ""
    return _ci(fit.peak_n, fit.peak_n_ci), fitted(fit.peak_x)


def _scales(workload: Any, metric: str, hib: Any, scaling: Mapping[str, Collection[str]]) -> bool:
    """Whether `metric` scales with load like a throughput: as its workload says (Workload.scaling_metrics in
    `scaling`); for a workload that does not say, when higher is better."""
    said = scaling.get(str(workload)) if workload is not None and not pd.isna(workload) else None
    if said is not None:
        return metric in said
    return hib is not None and not pd.isna(hib) and bool(hib)


def _metric_scales(tot: pd.DataFrame, metric: str, scaling: Mapping[str, Collection[str]]) -> bool:
    """Whether `metric` scales for any workload of the data (see _scales)."""
    rows = tot[(tot["metric"] == metric).to_numpy()]
    hib = rows["higher_is_better"].dropna() if "higher_is_better" in rows.columns else pd.Series(dtype=object)
    workloads = list(rows["workload"].dropna().unique()) if "workload" in rows.columns else []
    return any(_scales(w, metric, hib.iloc[0] if len(hib) else None, scaling) for w in workloads or [None])


def _scaling_sections(rep: Page, tot: pd.DataFrame, metric_names: Sequence[str], axis: str,
                      facts: dict[str, dict[str, Any]], bootstrap: int, seed: int, d: float,
                      scaling: Mapping[str, Collection[str]], trials: pd.DataFrame | None = None) -> None:
    group_cols = [c for c in ("campaign", "workload") if c in tot.columns] + ["metric"]
    label_cols = _label_columns(tot, [c for c in slice_columns(tot, axis) if c not in group_cols])
    nested = nested_hosts(facts)
    rep.sections.append(f"<h2>Scaling along {html.escape(shown(axis))}</h2><p>Left: median of the repetitions; band: "
                        "interquartile range; dashed: USL fit (faint when the fit is poor); x: collapse point "
                        f"(throughput stays below {100 * (1 - d):.0f}% of the peak, judged on the largest repetition);"
                        " dotted vertical line: the CPU count the load ran on (host CPUs, or the guest's vCPUs). A drop"
                        " at or below the CPU count comes with contention; a collapse past it with the preemption of a"
                        " lock holder or waiter: the table tells them apart."
                        " Right: speedup and efficiency relative to the smallest load. Intervals are 95% bootstrap"
                        " intervals over repetitions. Fits, collapse points, speedup and efficiency are drawn for"
                        " the metrics that scale like a throughput (as their workload says); other metrics"
                        " (fairness, times, counts) show their median and spread only.</p>")
    chosen = tot[tot["metric"].isin(metric_names)]
    groups = sorted(chosen.groupby(group_cols, sort=True, observed=True),
                    key=lambda g: list(metric_names).index(g[0][-1]))  # metric by metric, in the order given
    for gi, (gkey, gdf) in enumerate(groups):
        gparams = dict(zip(group_cols, gkey))
        title = _label(gparams)
        unit = str(gdf["unit"].dropna().iloc[0]) if "unit" in gdf.columns and gdf["unit"].notna().any() else ""
        hib = gdf["higher_is_better"].dropna() if "higher_is_better" in gdf.columns else pd.Series(dtype=object)
        scales = _scales(gparams.get("workload"), str(gparams["metric"]), hib.iloc[0] if len(hib) else None, scaling)
        rows, series = [], []
        for params, sdf in iter_slices(gdf, axis):
            label = _label({k: params[k] for k in label_cols if k in params}) or title
            if is_vm_env(params.get("env", "host")) and "host" in sdf.columns \
                    and set(map(str, sdf["host"].dropna().unique())) & nested:
                label += " nested"
            n, x = sdf[axis].to_numpy(dtype=float), sdf["value"].to_numpy(dtype=float)
            lv = spread_by_level(n, x)
            cpus = cpu_count(params, sdf, axis, trials, facts)
            fit: UslFit | None = None
            coll: Collapse | None = None
            split: CpuSplit | None = None
            if lv.shape[0] >= 2 and scales and np.isfinite(x).sum() >= 3:  # a USL fit has 3 parameters
                fit = fit_usl(n, x, bootstrap=bootstrap, seed=seed)
                coll = detect_collapse(n, x, d=d)
                if cpus is not None:
                    split = split_at_cpus(n, x, cpus[0], d=d)
                    coll = split.main() or split.past or split.contention or coll  # no x when neither side collapsed
                if coll.collapsed:
                    rep.collapses.append((dict(params), coll, f"{title} {label}" if label != title else title))
            series.append(plots.Series(label, lv["n"].to_numpy(), lv["median"].to_numpy(), lv["q1"].to_numpy(),
                                       lv["q3"].to_numpy(), fit, coll, cpus))
            hosts = sorted(map(str, sdf["host"].dropna().unique())) if "host" in sdf.columns else []
            if len(hosts) > 1:
                differ, missing = _facts_differ(hosts, facts)
                if differ:
                    rep.warnings.append(f"{title} {label}: ran on hosts {', '.join(hosts)} that differ in "
                                        f"{', '.join(differ)}; its points are not comparable")
                if missing:
                    rep.warnings.append(f"{title} {label}: no facts recorded for host(s) {', '.join(missing)}; "
                                        "cannot check that its hosts are comparable")
            rows.append(_fit_row(label, lv, fit, coll, hosts, split, cpus) if scales else _level_row(label, lv, hosts))
        all_hosts = sorted(map(str, gdf["host"].dropna().unique())) if "host" in gdf.columns else []
        differ, _ = _facts_differ(all_hosts, facts)
        if differ:
            rep.warnings.append(f"{title}: its variants ran on hosts that differ in {', '.join(differ)} "
                                f"({', '.join(all_hosts)}); compare them with care")
        rep.sections.append(f"<h3>{html.escape(title)}</h3>")
        for part in range(0, len(series), LINES_PER_FIGURE):
            chunk = series[part:part + LINES_PER_FIGURE]
            suffix = f" ({part // LINES_PER_FIGURE + 1})" if len(series) > LINES_PER_FIGURE else ""
            if any("accel=tcg" in s.label for s in chunk):  # never let an emulated curve pass for KVM
                suffix += "\naccel=tcg: QEMU software emulation, not KVM"
            rep.sections.append(rep.figure(
                f"scaling_{gi}_{part}", plots.scaling, series=chunk, axis=shown(axis),
                ylabel=f"{gparams['metric']} ({unit})" if unit else str(gparams["metric"]), title=title + suffix, speedup=scales))
        if not scales:
            rep.sections.append(_table(["variant", "loads", "hosts", "median at the smallest load",
                                        "median at the largest load", "medians (min..max)"], rows))
            continue
        rep.sections.append(_table(
            ["variant", "loads", "hosts", "sigma (contention)", "kappa (coherency)", "gamma", "peak N*", "X(N*)", "R^2",
             "collapse", "fit"], rows, raw=[False] * 10 + [True]))


def _fit_row(label: str, lv: pd.DataFrame, fit: UslFit | None, coll: Collapse | None, hosts: list[str],
             split: CpuSplit | None = None, cpus: tuple[float, str] | None = None) -> list[Any]:
    loads = f"{_fmt(lv['n'].iloc[0])}..{_fmt(lv['n'].iloc[-1])} ({lv.shape[0]})"
    if fit is None:
        why = "one load only: nothing to fit" if lv.shape[0] < 2 else "fewer than 3 points: nothing to fit"
        return [label, loads, ", ".join(hosts)] + [""] * 6 + ["", why]
    collapse = (f"at {_fmt(coll.collapse_n)}: -{100 * coll.drop:.0f}% of peak at {_fmt(coll.peak_n)}"
                if coll and coll.collapsed else f"none (peak at {_fmt(coll.peak_n)})" if coll else "")
    if split is not None and cpus is not None:
        collapse = _split_text(split, cpus)
    note = f'<span class="poor">poor fit: {html.escape(fit.reason)}</span>' if fit.poor_fit else "ok"
    return [label, loads, ", ".join(hosts), _ci(fit.sigma, fit.sigma_ci), _ci(fit.kappa, fit.kappa_ci),
            _ci(fit.gamma, fit.gamma_ci), *_peak(fit), f"{fit.r2:.3f}", collapse, note]


def _split_text(split: CpuSplit, cpus: tuple[float, str]) -> str:
    """What a slice's table row says of its drops on both sides of the CPU count."""
    where = f"{_fmt(cpus[0])} {cpus[1]}"
    parts = []
    c, p = split.contention, split.past
    if c is not None and c.collapsed:
        parts.append(f"drop with contention at {_fmt(c.collapse_n)} (at or below the {where}): -{100 * c.drop:.0f}% of "
                     f"the peak at {_fmt(c.peak_n)}")
    if p is not None and p.collapsed:
        parts.append(f"collapse past the {where} at {_fmt(p.collapse_n)}: -{100 * p.drop:.0f}% of peak at {_fmt(p.peak_n)}")
    elif p is not None:
        parts.append(f"no collapse past the {where} (at the largest load {100 * p.last_ratio:.0f}% of the throughput at {_fmt(p.peak_n)})")
    else:
        parts.append(f"no load past the {where}")
    return "; ".join(parts)


def _level_row(label: str, lv: pd.DataFrame, hosts: list[str]) -> list[Any]:
    """A row of the table of a metric that does not scale: where its median starts, ends and how far it ranges."""
    loads = f"{_fmt(lv['n'].iloc[0])}..{_fmt(lv['n'].iloc[-1])} ({lv.shape[0]})"
    med = lv["median"]
    return [label, loads, ", ".join(hosts), med.iloc[0], med.iloc[-1], f"{_fmt(med.min())}..{_fmt(med.max())}"]


def _explain_section(rep: Page, metrics: pd.DataFrame, axis: str) -> str:
    """For every collapse the scaling sections found, the figures at the load before it and at it, side by
    side (runner.analysis.explain)."""
    if not rep.collapses:
        return ""
    rows = explained_rows(metrics)
    explained = [e for params, c, label in rep.collapses
                 if (e := explain_collapse(rows, params, axis, c.peak_n, c.collapse_n, c.drop, label)) is not None]
    explained = [dataclasses.replace(e, axis=shown(e.axis)) for e in explained]
    if not explained:
        return ""
    parts = ["<h2>Collapse explained</h2><p>For each collapse point, the median over the repetitions at the last load "
             "before it and at it: the result, every probe figure recorded there (docs/probes.md) and, for counts and times, "
             "the same per operation of the workload (lockbench: per lock acquisition), trial by trial. Change: after / before.</p>"]
    for e in explained:
        parts.append(f"<h3>{html.escape(e.label)}: collapse at {html.escape(e.axis)} = {_fmt(e.after_n)} "
                     f"(-{100 * e.drop:.0f}% of the peak at {_fmt(e.peak_n)})</h3>")
        rows = [[r.figure, r.unit, r.before, r.after, f"{r.change:.3g}x" if pd.notna(r.change) else ""] for r in e.table.itertuples()]
        parts.append(_table(["figure", "unit", f"{e.axis} = {_fmt(e.before_n)}", f"{e.axis} = {_fmt(e.after_n)}", "change"], rows))
    if not any(e.probes for e in explained):
        parts.append("<p>No probe was recorded at these cells: add <code>probes: [perf_stat, schedstat]</code> to the matrix "
                     "to see the context switches and run delay behind a collapse.</p>")
    return "\n".join(parts)
