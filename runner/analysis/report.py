"""HTML report of a campaign: scaling, fits, collapse, over-commit, comparability warnings, provenance.

`build_report` writes `out_dir/report.html`, `out_dir/summary.csv` (median and spread of every cell) and the
figures as PNG files in `out_dir/img/` (drawn at twice the size shown), referenced from the HTML by relative path
(so the directory is the report: copy or serve it whole). Figures are limited to `max_figures`; tables always
cover every slice. Every axis with more than one value is part of each cell's key in the tables, summary.csv,
figures and legends, under its own name (runner.analysis.axes). A section the campaign has no data for says in
one line what the matrix needs to get it.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis import plots
from runner.analysis.adaptive import AT_MAX, OPEN, TIGHT, repetition_table
from runner.analysis.axes import AXIS_PREFIX, label as _label, own_names, shown, shown_frame, with_trial_axes
from runner.analysis.collapse import DEFAULT_DROP, Collapse, CpuSplit, detect_collapse, split_at_cpus
from runner.analysis.drift import (
    FACT_KEYS,
    LAST,
    STATE_SAMPLE_S,
    canary_metric,
    canary_rhythm,
    canary_series,
    drift_table,
    drift_warnings,
    facts_differ,
    false_alarm_rate,
    host_summary,
    host_warnings,
    state_differences,
    state_readings,
    trial_states,
)
from runner.analysis.explain import explain_collapse, explained_rows
from runner.analysis.findings import cpu_count, findings_section, host_cpus, is_virtual, is_vm_env, nested_hosts
from runner.analysis.fmt import fitted, number
from runner.analysis.overcommit import VMS_AXIS, overcommit_table
from runner.analysis.stats import (
    DEFAULT_TARGET,
    as_pandas,
    cell_stats,
    check_metrics,
    iter_slices,
    param_columns,
    scaling_axis,
    slice_columns,
    spread_by_level,
    totals,
)
from runner.analysis.usl import UslFit, fit_usl
from runner.errors import BadDatasetError, UsageError
from runner.provision import environments
from runner.records.schema import ordinary_role

LINES_PER_FIGURE = 8
INLINE_FIGURES = 1  # figures drawn in the report's own process; the rest in up to 2 forked worker processes (_Report)
HTML_ROWS = 2000  # cells shown in the HTML summary table; summary.csv has all
NO_ACCEL = {"none", "", None}

_CSS = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;
vertical-align:top;overflow-wrap:anywhere}th{background:#eee}td:first-child,th:first-child{text-align:left}
.tbl{max-width:100%;overflow-x:auto}.facts td,.facts th{text-align:left;max-width:40em}.facts tr.differ td{background:#fff3cd}
.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:4px 8px;margin:4px 0}.hint{color:#555;font-style:italic}
.poor{color:#a00}.tcg{color:#a00;font-weight:bold}img{max-width:100%;height:auto}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}h2{border-bottom:1px solid #ccc}
code{background:#f3f3f3;padding:0 3px}"""


def summary_table(metrics: Any, *, metric: str | None = None, target: float = DEFAULT_TARGET,
                  trials: Any = None) -> pd.DataFrame:
    """Median and spread of every cell's totals: parameters, metric, unit, n, median, q1, q3, iqr, rel_iqr,
    ci_rel (relative 95% half-width of the median), wide and reps_needed (see runner.analysis.stats; null where it
    cannot be estimated). Every axis is a column under its own name: with `trials`, also the axes the metrics
    table has no column for (guest_kernel); an axis named like a statistic (`n`) keeps its name and the
    statistic becomes stat_<name> (runner.analysis.axes)."""
    metrics = with_trial_axes(as_pandas(metrics), as_pandas(trials) if trials is not None else None)
    metrics, _, _ = own_names(metrics)
    return shown_frame(_summary(metrics, metric=metric, target=target))


def _summary(metrics: pd.DataFrame, *, metric: str | None = None, target: float = DEFAULT_TARGET) -> pd.DataFrame:
    """summary_table of a metrics table whose axes are already renamed (own_names), under those names."""
    st = cell_stats(metrics, metric=metric, target=target)
    params = [c for c in param_columns(metrics) if c in st.columns]
    cols = params + ["metric"] + [c for c in ("unit", "n", "median", "q1", "q3", "iqr", "rel_iqr", "ci_rel", "wide",
                                              "reps_needed") if c in st.columns]
    out = st[cols].sort_values(params + ["metric"], kind="stable").reset_index(drop=True)
    if "reps_needed" in out.columns:  # -1 (cannot be estimated: one repetition, no spread) is unknown, not a count
        out["reps_needed"] = out["reps_needed"].astype("Int64").mask(out["reps_needed"] < 0)
    return out


def _fmt(v: Any) -> str:
    """A table cell for people: yes/no for booleans, blank for unknown, numbers as runner.analysis.fmt."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    return number(v)


def _ci(v: float, ci: tuple[float, float]) -> str:
    """A fitted coefficient and its interval, for people (a fitted 0 is 0, never 4.941e-324)."""
    if any(map(math.isnan, ci)):
        return fitted(v)
    return f"{fitted(v)} [{fitted(ci[0])}, {fitted(ci[1])}]"


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


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: Sequence[bool] = ()) -> str:
    """HTML table; cells are escaped unless their column is marked raw (already HTML)."""
    out = ['<div class="tbl"><table><tr>' + "".join(f"<th>{html.escape(shown(h))}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = [c if i < len(raw) and raw[i] else html.escape(_fmt(c)) for i, c in enumerate(r)]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _hint(text: str) -> str:
    """One line saying what the matrix needs for a section the campaign has no data for (HTML allowed)."""
    return f'<p class="hint">{text}</p>'


def _warn(text: str) -> str:
    return f'<div class="warn">{html.escape(text)}</div>'


def _facts_differ(hosts: Iterable[str], facts: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(fact keys whose values differ between the hosts, hosts without facts): runner.analysis.drift.facts_differ,
    which reads the collector's nested facts as well as flat summaries."""
    return facts_differ(hosts, facts)


class _Report:
    """Accumulates the HTML sections and warnings of one report."""

    def __init__(self, out_dir: Path, max_figures: int) -> None:
        self.out_dir = out_dir
        self.img = out_dir / "img"
        self.max_figures = max_figures
        self.figures = 0
        self.omitted = 0
        self.warnings: list[str] = []
        self.sections: list[str] = []
        self.collapses: list[tuple[dict[str, Any], Collapse, str]] = []  # (slice parameters, its collapse, label)
        self._painters: Any = None  # the processes that draw figures beyond the first INLINE_FIGURES
        self._drawing: list[Any] = []  # their futures

    def figure(self, name: str, draw: Any, **kwargs: Any) -> str:
        """Draw `draw(img/<name>.png, **kwargs)` (a function of runner.analysis.plots, plain data) if the budget
        allows; returns the <img> tag or ''. The first INLINE_FIGURES are drawn here; the rest in worker
        processes while the report goes on (matplotlib draws a figure of many curves in ~0.6 s, all of it
        CPU): `close` waits for them."""
        if self.figures >= self.max_figures:
            self.omitted += 1
            return ""
        self.figures += 1
        path = self.img / f"{name}.png"
        if self.figures <= INLINE_FIGURES:
            draw(path, **kwargs)
        else:
            self._drawing.append(self._pool().submit(draw, path, **kwargs))
        alt = html.escape(str(kwargs.get("title") or name).replace("\n", " "))
        return f'<p><img src="img/{html.escape(path.name)}" alt="{alt}" data-figure="{html.escape(name)}"></p>'

    def _pool(self) -> Any:
        if self._painters is None:
            import multiprocessing
            import os
            from concurrent.futures import ProcessPoolExecutor

            # fork (Python 3.11's default here): the workers have matplotlib and the data already, and a script
            # that builds a report at module level works (spawn and forkserver import the caller's main module again)
            self._painters = ProcessPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)),
                                                 mp_context=multiprocessing.get_context("fork"))
        return self._painters

    def close(self) -> None:
        """Wait for the figures drawn in worker processes; the first failure is raised."""
        try:
            for future in self._drawing:
                future.result()
        finally:
            self._drawing.clear()
            if self._painters is not None:
                self._painters.shutdown(cancel_futures=True)
                self._painters = None


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


def _plot_metrics(tot: pd.DataFrame, chosen: Sequence[str] | None, scaling: Mapping[str, Collection[str]]) -> list[str]:
    present = sorted(map(str, tot["metric"].unique()))
    if chosen:
        unknown = [m for m in chosen if m not in present]
        if unknown:
            raise UsageError(f"no metric {unknown[0]!r} in the data; known: {', '.join(present)}")
        return list(chosen)
    if "higher_is_better" in tot.columns:
        hib = tot.drop_duplicates("metric").set_index("metric")["higher_is_better"]
        better = sorted(str(m) for m, v in hib.items() if pd.notna(v) and bool(v))
        if better:  # metrics that scale first, throughput first of all: they get the figures when they are limited
            return sorted(better, key=lambda m: (not _metric_scales(tot, m, scaling), m != "throughput"))
    return present


def _label_columns(tot: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """Columns worth naming in labels: those that vary, plus accel whenever a real accelerator appears."""
    out = [c for c in cols if tot[c].nunique(dropna=False) > 1]
    if "accel" in tot.columns and "accel" not in out and not set(tot["accel"].dropna().unique()) <= NO_ACCEL:
        out.append("accel")
    return out


def _scaling_sections(rep: _Report, tot: pd.DataFrame, metric_names: Sequence[str], axis: str,
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


def _overcommit_sections(rep: _Report, metrics: pd.DataFrame, metric_names: Sequence[str]) -> None:
    rep.sections.append("<h2>Over-commit</h2><p>k VMs share the same cores; T1 is the median of the single-VM cell "
                        "with equal parameters. Aggregate efficiency sum T<sub>k,i</sub>/T1 (ideal 1), per-VM "
                        "normalized throughput T<sub>k,i</sub>/T1 (ideal 1/k), Jain's index (1 fair, 1/k one VM "
                        "gets all); medians over repetitions.</p>")
    found = False
    for mi, name in enumerate(metric_names):
        cells, _ = overcommit_table(metrics, metric=name)
        if cells.empty or cells["k"].max() < 2:  # no per-VM rows past one VM (a per-trial total): nothing to show
            continue
        found = True
        group_cols = [c for c in ("campaign", "workload") if c in cells.columns]
        var_cols = _label_columns(cells, [c for c in param_columns(metrics) if c not in group_cols + [VMS_AXIS]])
        groups = cells.groupby(group_cols, sort=True, observed=True) if group_cols else [((), cells)]
        for gi, (gkey, gdf) in enumerate(groups):
            gkey = gkey if isinstance(gkey, tuple) else (gkey,)
            title = _label({**dict(zip(group_cols, gkey)), "metric": name})
            if var_cols:  # variants measured with one VM only (a scaling cell beside the over-commit ones) show nothing here
                most = gdf.groupby(var_cols, dropna=False, observed=True)["k"].transform("max")
                gdf = gdf[(most >= 2).to_numpy()]
            series = []
            for vkey, vdf in (gdf.groupby(var_cols, sort=True, dropna=False, observed=True) if var_cols else [((), gdf)]):
                vkey = vkey if isinstance(vkey, tuple) else (vkey,)
                vdf = vdf.sort_values("k")
                series.append(plots.OvercommitSeries(
                    _label(dict(zip(var_cols, vkey))) or title, vdf["k"].to_numpy(), vdf["efficiency"].to_numpy(),
                    vdf["efficiency_q1"].to_numpy(), vdf["efficiency_q3"].to_numpy(), vdf["jain"].to_numpy()))
            rep.sections.append(f"<h3>{html.escape(title)}</h3>")
            rep.sections.append(rep.figure(f"overcommit_{mi}_{gi}", plots.overcommit, series=series, title=title))
            rows = [[_label({c: r[c] for c in var_cols}), r["k"], r["n"], r["t1"], r["efficiency"],
                     f"{_fmt(r['efficiency_q1'])}..{_fmt(r['efficiency_q3'])}", r["jain"], r["jain_min"],
                     f"{_fmt(r['norm_min'])}..{_fmt(r['norm_max'])}", r["ideal_per_vm"],
                     f"{int(r['vms_seen'])}/{int(r['k'])}"] for _, r in gdf.iterrows()]
            rep.sections.append(_table(["variant", "k", "reps", "T1", "efficiency", "IQR", "Jain", "Jain min",
                                        "per-VM T/T1 (min..max)", "ideal per VM", "VMs seen"], rows))
            short = gdf[gdf["vms_seen"] < gdf["k"]]
            if not short.empty:
                rep.warnings.append(f"{title}: {len(short)} over-commit cell(s) lack per-VM rows for some VMs")
    if not found:
        rep.sections.append(_hint("No over-commit cell has per-VM results and a single-VM reference (vms = 1 with equal "
                                  "parameters): keep 1 in <code>vms: [1, 2]</code>."))


def _provenance_section(provenance: dict[str, Any], tot: pd.DataFrame) -> str:
    parts = ["<h2>Provenance</h2>"]
    skip = {"hosts", "matrix"}
    fields = [[k, v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)]
              for k, v in provenance.items() if k not in skip]
    parts.append(_table(["field", "value"], fields).replace('<div class="tbl"><table>', '<div class="tbl"><table class="facts">', 1))
    if {"env", "accel"} <= set(tot.columns):
        used = tot.groupby(["env", "accel"], dropna=False, observed=True).size().reset_index(name="rows")
        parts.append("<h3>Environments and accelerators actually used</h3>")
        parts.append(_table(["env", "accel", "result rows"], used.itertuples(index=False)))
    hosts = provenance.get("hosts") or {}
    if hosts:
        parts.append("<h3>Hosts</h3>")
        parts.append(_hosts_table({str(h): f for h, f in hosts.items()}))
    matrix = provenance.get("matrix")
    if matrix is not None:
        text = matrix if isinstance(matrix, str) else json.dumps(matrix, indent=2, default=str)
        parts.append("<h3>Matrix</h3><pre>" + html.escape(text) + "</pre>")
    return "\n".join(parts)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested facts as dotted keys ('cpu.model'); lists of plain values joined with ', '."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and all(not isinstance(v, (Mapping, list)) for v in value):
        return {prefix: ", ".join(map(str, value))}
    if isinstance(value, list):
        return {prefix: json.dumps(value, default=str)}
    return {prefix: value}


FACT_ROWS = 400  # fact rows shown per report; the rest are in the datasets' hosts/*.json


def _hosts_table(hosts: Mapping[str, Mapping[str, Any]]) -> str:
    """Host facts for people: one row per fact, one column per host. The summary facts that make hosts comparable
    (runner.analysis.drift.FACT_KEYS) come first, those that differ between hosts first of all and marked; the
    collector's full facts follow, folded (differences first again)."""
    names = sorted(hosts)
    summary = {h: {**host_summary(hosts[h]), "cpus": host_cpus(hosts[h]), "hypervisor": hosts[h].get("hypervisor"),
                   "virtual machine (its guests nested)": is_virtual(hosts[h])} for h in names}
    flat = {h: _flat(hosts[h]) for h in names}

    def differs(values: Sequence[Any]) -> bool:
        return len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1

    def rows(table: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> tuple[list[str], int]:
        keyed = [(k, [table[h].get(k) for h in names]) for k in keys]
        keyed = sorted(keyed, key=lambda kv: not differs(kv[1]))  # stable: differences first, then in order
        out = []
        for k, values in keyed[:FACT_ROWS]:
            cls = ' class="differ"' if differs(values) else ""
            out.append(f"<tr{cls}><td>{html.escape(k)}</td>" + "".join(
                f"<td>{html.escape(_fmt(v) if not isinstance(v, (list, dict)) else json.dumps(v, default=str))}</td>"
                for v in values) + "</tr>")
        return out, sum(differs(v) for _, v in keyed)

    head = "<tr><th>fact</th>" + "".join(f"<th>{html.escape(h)}</th>" for h in names) + "</tr>"
    present = [k for k in (*FACT_KEYS, "cpus", "hypervisor", "virtual machine (its guests nested)")
               if any(summary[h].get(k) is not None for h in names)]
    main, ndiff = rows(summary, present)
    keys = list(dict.fromkeys(k for h in names for k in flat[h]))
    full, fdiff = rows(flat, keys)
    said = (f"{ndiff} of these facts differ between the hosts (marked, first)." if len(names) > 1 and ndiff else
            "The hosts agree on these facts." if len(names) > 1 else "")
    more = f" First {FACT_ROWS} of {len(keys)}; all in the dataset's hosts/*.json." if len(keys) > FACT_ROWS else ""
    return (f"<p>{said}</p>" + '<div class="tbl"><table class="facts">' + head + "".join(main) + "</table></div>"
            + f"<details><summary>All facts the collector took ({len(keys)}"
            + (f", {fdiff} differ" if len(names) > 1 else "") + ")</summary>"
            + '<div class="tbl"><table class="facts">' + head + "".join(full) + f"</table></div>{more}</details>")


def _trial_section(rep: _Report, trials: pd.DataFrame | None) -> str:
    if trials is None or trials.empty or "status" not in trials.columns:
        return ""
    by_status = trials["status"].value_counts().sort_index()
    final = trials
    if {"trial_id", "attempt"} <= set(trials.columns):
        final = trials.sort_values("attempt").drop_duplicates("trial_id", keep="last")
    canary = ~ordinary_role(final["role"]) if "role" in final.columns else np.zeros(len(final), dtype=bool)
    canaries, final = final[canary], final[~canary]
    bad = final[final["status"] != "ok"]
    if not bad.empty:
        rep.warnings.append(f"{len(bad)} trial(s) have no successful attempt ({', '.join(sorted(map(str, bad['status'].unique())))});"
                            " their cells have fewer repetitions")
    more = ""
    if len(canaries):
        failed = int((canaries["status"] != "ok").sum())
        more = f" And {len(canaries)} canary runs" + (f", {failed} of them failed" if failed else "") + " (see 'Drift and host state')."
    return "<h2>Trials</h2>" + _table(["status", "attempts"], by_status.items()) + (
        f"<p>{len(final)} trials, {len(final) - len(bad)} with a successful attempt.{more}</p>")


def _wide_section(rep: _Report, stats: pd.DataFrame, params: Sequence[str], target: float) -> str:
    """The cells whose median is not known to +-target: one column per parameter that varies, one per statistic.
    `params` are the metrics table's parameter columns (the statistics' own columns are not parameters)."""
    wide = stats[stats["wide"]].sort_values("ci_rel", ascending=False)
    if wide.empty:
        return ""
    rep.warnings.append(f"{len(wide)} cell(s) have a 95% interval of the median wider than +-{100 * target:.0f}%; "
                        "see 'Cells with wide spread' for the repetitions they need")
    cols = _label_columns(stats, [c for c in params if c in stats.columns])
    rows = [[*(r[c] for c in cols), r["metric"], r["n"], r["median"], r["q1"], r["q3"], f"{100 * r['ci_rel']:.1f}%",
             r["reps_needed"]] for _, r in wide.head(50).iterrows()]
    more = f"<p>{len(wide) - 50} more in summary.csv (column wide).</p>" if len(wide) > 50 else ""
    return ("<h2>Cells with wide spread</h2>" + _table([*cols, "metric", "reps", "median", "q1", "q3", "CI half-width",
                                                        "reps needed"], rows) + more)


def _repetitions_section(rep: _Report, metrics: pd.DataFrame, trials: pd.DataFrame | None, stats: pd.DataFrame,
                         provenance: dict[str, Any]) -> str:
    """With repetitions as bounds (the provenance's `repetitions` is a mapping): per cell, whether its interval
    met the target or it stopped at max (runner.analysis.adaptive)."""
    policy = provenance.get("repetitions")
    if not isinstance(policy, dict) or trials is None or trials.empty:
        return ""
    table = repetition_table(metrics, trials, policy)
    if table.empty:
        return ""
    params = stats.drop_duplicates("cell_id").set_index("cell_id")
    cols = _label_columns(stats, [c for c in param_columns(metrics) if c in stats.columns])
    counts = table["status"].value_counts()
    at_max = int(counts.get(AT_MAX, 0))
    if at_max:
        rep.warnings.append(f"{at_max} cell(s) stopped at max {policy['max']} repetitions with an interval wider than "
                            f"+-{100 * float(policy['ci']):g}%; see 'Repetitions'")
    rows = [[*(params.at[r["cell_id"], c] if r["cell_id"] in params.index else "" for c in cols), r["metric"], r["repetitions"],
             r["ok"], f"{100 * r['ci_rel']:.1f}%" if pd.notna(r["ci_rel"]) else "", r["status"]]
            for _, r in table.sort_values(["status", "ci_rel"], ascending=[True, False]).iterrows()]
    return (f"<h2>Repetitions</h2><p>Repetitions until the 95% interval of the median is within +-{100 * float(policy['ci']):g}%: "
            f"{policy['min']} to {policy['max']} per cell. {int(counts.get(TIGHT, 0))} cell(s) {TIGHT}, {at_max} {AT_MAX}"
            + (f", {int(counts.get(OPEN, 0))} {OPEN} (the campaign was interrupted, or the cell failed)" if counts.get(OPEN) else "")
            + ".</p>" + _table([*cols, "metric", "repetitions", "ok", "CI half-width", "status"], rows))


def _drift_section(rep: _Report, metrics: pd.DataFrame, trials: pd.DataFrame | None, provenance: dict[str, Any]) -> str:
    """The canary over time per host with the drift rule's verdict, and the host state of every batch
    (runner.analysis.drift); warnings for drift, other processes' load, throttling, state that changed, and
    trials compared under different host state. Empty when the campaign has neither canary nor host_state."""
    spec = provenance.get("canary") if isinstance(provenance.get("canary"), dict) else {}
    metric = canary_metric(metrics, spec.get("metric"))
    series = canary_series(metrics, trials, metric) if metric else canary_series(metrics.iloc[:0])
    readings = state_readings(metrics, trials)
    if series.empty and readings.empty and not spec:
        return ""
    parts = ["<h2>Drift and host state</h2>"]
    cell = " ".join(f"{k}={v}" for k, v in (spec.get("cell") or {}).items()) or "the canary cell"
    t0 = _first_start(trials)
    if spec and series.empty:
        parts.append(f"<p>The matrix names a canary ({html.escape(cell)}, {html.escape(canary_rhythm(spec))}) but no canary run "
                     "has a result yet.</p>")
    if not series.empty:
        drift = drift_table(series)
        rep.warnings.extend(drift_warnings(drift, cell, str(metric)))
        unit = ""
        if "unit" in metrics.columns:
            units = metrics.loc[(metrics["metric"] == metric).to_numpy(), "unit"].dropna()
            unit = str(units.iloc[0]) if len(units) else ""
        lines = []
        by_host = drift.set_index("host")
        for host, srs in series.groupby("host", sort=True):
            d = by_host.loc[host]
            known = srs["started_at"].notna().all() and t0 is not None
            x = ((srs["started_at"] - t0).dt.total_seconds() / 60).to_numpy(dtype=float) if known else srs["run"].to_numpy(dtype=float)
            lines.append(plots.CanarySeries(str(host), x, srs["value"].to_numpy(dtype=float), int(d["reference"]),
                                            float(d["ref_low"]), float(d["ref_high"]), LAST, d["drifted"]))
        timed = series["started_at"].notna().all() and t0 is not None
        parts.append(
            f"<p>The canary, {html.escape(cell)}, re-run on each host before its first trial, then "
            f"{html.escape(canary_rhythm(spec))} and once after its last trial (its runs are not repetitions of the cell and stay out of its "
            f"statistics). Shaded: the range of a host's first runs (squares); ringed: its last {LAST} runs. A host drifts when "
            f"those all lie outside that range on one side and their median moved by more than 2% (chance on a steady host: "
            f"{100 * false_alarm_rate():.1f}%; docs/analysis.md).</p>")
        parts.append(rep.figure(
            "canary", plots.canary, series=lines, ylabel=f"{metric} ({unit})" if unit else str(metric), title=f"canary {cell}: {metric}",
            xlabel="minutes since the first trial" if timed else "canary run"))
        rows = []
        for r in drift.itertuples():
            verdict = ("too few runs to judge (fewer than 7)" if r.drifted is None
                       else f"drifted {r.direction}" if r.drifted else "steady")
            rows.append([r.host, r.runs, r.reference or "", r.ref_median, f"{_fmt(r.ref_low)}..{_fmt(r.ref_high)}",
                         r.last_median, f"{100 * r.shift:+.1f}%" if pd.notna(r.shift) else "", verdict])
        parts.append(_table(["host", "runs", "reference runs", "reference median", "reference range",
                             f"median of the last {LAST}", "shift", "verdict"], rows))
    if not readings.empty:
        rep.warnings.extend(host_warnings(readings))
        if trials is not None and not trials.empty:
            states = trial_states(readings, trials)
            campaigns = states.merge(trials[["trial_id", "campaign"]].drop_duplicates("trial_id"), on="trial_id", how="left") \
                if "campaign" in trials.columns else states.assign(campaign=provenance.get("campaign"))
            for camp, rows_c in campaigns.groupby("campaign", sort=True, dropna=False):
                rep.warnings.extend(state_differences(rows_c, f"campaign {camp}"))
        parts.append("<h3>Host state, batch by batch</h3><p>Read by the host_state probe right before each canary run (a "
                     "batch is the trials up to the next one): cpufreq governors, turbo, automatic NUMA balancing, irqbalance, "
                     f"the busy share of the CPUs over {STATE_SAMPLE_S:g} s while no trial ran (other processes' load), the 1-minute load "
                     "average, and the thermal throttle count (CPUs summed; rise: until the next reading).</p>")
        state_rows = readings.head(HOST_STATE_ROWS)
        parts.append(_table(["host", "at", "governor", "turbo", "NUMA balancing", "irqbalance", "busy", "load1", "throttle count",
                             "rise"], [[r.host, _clock(r.at, t0), r.governor or "", _onoff(r.turbo), _fmt(r.numa_balancing),
                                        _onoff(r.irqbalance), f"{100 * r.busy:.0f}%" if pd.notna(r.busy) else "", r.load1,
                                        r.throttle_count, r.throttle_rise] for r in state_rows.itertuples()]))
        if len(readings) > HOST_STATE_ROWS:
            parts.append(f"<p>{len(readings) - HOST_STATE_ROWS} more readings in canary.csv.</p>")
    out = series.merge(readings.drop(columns=["host"]), on="trial_id", how="outer") if not series.empty else readings
    out.to_csv(rep.out_dir / "canary.csv", index=False)
    return "\n".join(parts)


HOST_STATE_ROWS = 60


def _first_start(trials: pd.DataFrame | None) -> pd.Timestamp | None:
    if trials is None or trials.empty or "started_at" not in trials.columns or trials["started_at"].isna().all():
        return None
    return trials["started_at"].min()


def _clock(at: Any, t0: pd.Timestamp | None) -> str:
    """A reading's time since the first trial, +1h02m03s (its clock time when that is unknown)."""
    if at is None or pd.isna(at):
        return ""
    if t0 is None:
        return str(at)
    h, rem = divmod(max(0, int(round((at - t0).total_seconds()))), 3600)
    m, sec = divmod(rem, 60)
    return f"+{h}h{m:02d}m{sec:02d}s" if h else f"+{m}m{sec:02d}s"


def _onoff(v: Any) -> str:
    return "" if v is None or pd.isna(v) else ("on" if float(v) > 0 else "off")


def _explain_section(rep: _Report, metrics: pd.DataFrame, axis: str) -> str:
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


def _counts(metrics: pd.DataFrame, stats: pd.DataFrame) -> str:
    """'24 cells, 5 metrics, 1,234 metric rows': cells are sets of parameters, whatever the number of metrics."""
    keys = [c for c in ("campaign", "cell_id") if c in stats.columns]
    cells = len(stats.drop_duplicates(keys)) if keys else len(stats)
    metric_count = stats["metric"].nunique() if "metric" in stats.columns else 0
    return (f"{cells} cell{'s' * (cells != 1)}, {metric_count} metric{'s' * (metric_count != 1)}, "
            f"{len(metrics):,} metric rows")


def _report_dir(out: Path) -> Path:
    """Make the report directory (or keep an earlier report's) and remove the earlier report's figures; a path
    that cannot be a directory (a file in the way, no permission) is refused with one line naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in (out / "img").glob("*.png"):
            old.unlink()
    except OSError as exc:
        raise UsageError(f"{out}: cannot make the report directory: {exc.strerror or exc}") from None
    return out


def build_report(metrics: Any, trials: Any, provenance: dict[str, Any] | None, out_dir: Path | str, *,
                 axis: str | None = None, metric_names: Sequence[str] | None = None, bootstrap: int = 200,
                 seed: int = 0, d: float = DEFAULT_DROP, target: float = DEFAULT_TARGET,
                 max_figures: int = 12, scaling_metrics: Mapping[str, Collection[str]] | None = None) -> Path:
    """Write out_dir/report.html (PNG figures in out_dir/img/, all cells in out_dir/summary.csv); return its path.

    `axis` is the load axis (default: the first of threads, cores, vcpus with 2+ values); `metric_names` the
    metrics to plot and fit (default: every higher-is-better metric). Slices are the cells that differ only in
    the axis; each gets a USL fit with `bootstrap` replicates and collapse detection with drop `d`, when its
    metric scales like a throughput. `scaling_metrics` maps a workload name to its metrics that scale
    (runner.workloads.base.scaling_metrics(), which `runner report` passes); for a workload it does not name,
    every higher-is-better metric counts as scaling. Over-commit efficiency is shown for scaling metrics only.

    Everything that refuses the data (an unknown axis or metric, no total rows) is checked before `out_dir` is
    made or touched: a refused report leaves nothing behind, and an earlier report there as it was.
    """
    t0 = time.perf_counter()
    metrics = as_pandas(metrics)
    check_metrics(metrics)
    trials_df = as_pandas(trials) if trials is not None else None
    provenance = provenance or {}
    metrics = with_trial_axes(metrics, trials_df)  # guest_kernel and the like: axes the metrics table has no column for
    metrics, (trials_df,), _ = own_names(metrics, trials_df)  # an axis named `n` keeps its name, shown (axes.shown)
    if axis is not None and AXIS_PREFIX + axis in metrics.columns:
        axis = AXIS_PREFIX + axis
    if axis is not None and axis not in metrics.columns:
        raise UsageError(f"no axis {axis!r} in the data; axes: {', '.join(map(shown, param_columns(metrics)))}")
    axis = axis or scaling_axis(metrics)
    tot = totals(metrics)
    tot = tot[tot["value"].notna().to_numpy()]
    if tot.empty:
        raise BadDatasetError("the metrics table has no total rows (thread and vm null) to report")
    scaling = dict(scaling_metrics or {})
    names = _plot_metrics(tot, metric_names, scaling)
    stats = cell_stats(metrics, target=target)
    summary = _summary(metrics, target=target)
    out = _report_dir(Path(out_dir))
    shown_frame(summary).to_csv(out / "summary.csv", index=False)

    rep = _Report(out, max_figures)
    try:
        path = _build(rep, out, metrics, trials_df, provenance, axis, tot, names, stats, summary, scaling, bootstrap, seed, d,
                      target, max_figures, t0)
    finally:
        rep.close()
    _size_images(path)
    return path


def _size_images(path: Path) -> None:
    """Give every figure of the page the width it is drawn for (its PNGs are drawn at plots.SCALE x that)."""
    doc = path.read_text(encoding="utf-8")

    def sized(m: Any) -> str:
        img = path.parent / html.unescape(m.group(1))
        return f'{m.group(0)} width="{plots.shown_width(img)}"' if img.is_file() else m.group(0)

    path.write_text(re.sub(r'<img src="([^"]+)"', sized, doc), encoding="utf-8")


def _build(rep: _Report, out: Path, metrics: pd.DataFrame, trials_df: pd.DataFrame | None, provenance: Mapping[str, Any],
           axis: str | None, tot: pd.DataFrame, names: Sequence[str], stats: pd.DataFrame, summary: pd.DataFrame,
           scaling: Mapping[str, Collection[str]], bootstrap: int, seed: int, d: float, target: float, max_figures: int,
           t0: float) -> Path:
    facts = {str(h): f for h, f in (provenance.get("hosts") or {}).items()}
    if "accel" in tot.columns:
        emulated = tot[(tot["accel"] == "tcg").to_numpy()]
        if not emulated.empty:
            envs = ", ".join(sorted(map(str, emulated["env"].unique()))) if "env" in emulated.columns else ""
            rep.warnings.append(f"{len(emulated)} result rows ({envs}) ran under TCG, QEMU's software emulation: "
                                "they are not KVM figures and are labelled accel=tcg throughout")
        vms = [name for name in environments.known() if environments.get(name).virtual_machines]  # guests that have an accelerator
        guests = tot[tot["env"].isin(vms).to_numpy() & tot["accel"].isna().to_numpy()] if "env" in tot.columns else tot.iloc[:0]
        if not guests.empty:
            rep.warnings.append(f"{len(guests)} guest result rows do not record the accelerator used")
    if "campaign" in tot.columns and tot["campaign"].nunique() > 1:
        rep.warnings.append(f"the data holds {tot['campaign'].nunique()} campaigns; they are shown side by side, never pooled")
    trial_html = _trial_section(rep, trials_df)
    drift_html = _drift_section(rep, metrics, trials_df, provenance)  # before the scaling figures: its figure comes first
    scaling_names = [m for m in names if _metric_scales(tot, m, scaling)]
    findings_html = findings_section(rep, tot, metrics, axis, scaling_names[0] if scaling_names else None, trials_df, facts,
                                     _hint)
    if axis is not None:
        _scaling_sections(rep, tot, names, axis, facts, bootstrap, seed, d, scaling, trials_df)
    else:
        rep.sections.append("<h2>Scaling</h2>" + _hint("No load axis (threads, cores or vcpus with 2+ values) in the data: "
                                                       "add <code>threads: [1, 2, 4]</code> to the axes."))
    if VMS_AXIS in metrics.columns and metrics[VMS_AXIS].nunique() > 1:
        _overcommit_sections(rep, metrics, scaling_names)
    else:
        rep.sections.append("<h2>Over-commit</h2>" + _hint("No over-commit in this campaign: add <code>vms: [1, 2]</code> to "
                                                           "the axes of a guest campaign (env kvm or xen) for over-commit "
                                                           "efficiency and Jain's index."))
    explain_html = _explain_section(rep, metrics, axis) if axis is not None else ""
    wide_html = _wide_section(rep, stats, param_columns(metrics), target)
    reps_html = _repetitions_section(rep, metrics, trials_df, stats, provenance)
    first_rows = shown_frame(summary.head(HTML_ROWS))
    summary_html = ("<h2>Cells</h2><p>Median and interquartile range of every cell's repetitions"
                    + (f"; first {HTML_ROWS} of {len(summary)} (all in " if len(summary) > HTML_ROWS else " (also in ")
                    + '<a href="summary.csv">summary.csv</a>). Reps needed: for a 95% interval of the median within '
                    f"+-{100 * target:g}%; blank where it cannot be estimated (one repetition).</p>"
                    + _table(list(first_rows.columns), first_rows.itertuples(index=False)))
    if rep.omitted:
        rep.warnings.append(f"{rep.omitted} figure(s) left out (max_figures={max_figures}); their tables are complete")
    campaigns = sorted(map(str, tot["campaign"].unique())) if "campaign" in tot.columns else []
    title = f"Campaign {provenance.get('campaign') or ', '.join(campaigns)}"
    warn_html = "<h2>Warnings</h2>" + ("".join(_warn(w) for w in rep.warnings) if rep.warnings else "<p>None.</p>")
    doc = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p>Runner {html.escape(str(provenance.get('runner_version', '?')))}, commit "
        f"{html.escape(str(provenance.get('git_commit', '?')))}; {_counts(metrics, stats)}; "
        f"report built in {time.perf_counter() - t0:.1f} s.</p>",
        warn_html, trial_html, findings_html, *rep.sections, explain_html,
        drift_html or ("<h2>Drift and host state</h2>" + _hint(
            "No canary and no host state: add <code>canary: {cell: {lock: ticket, threads: 2}, every: 10}</code> to the "
            "matrix to watch the hosts drift (docs/analysis.md), and <code>probes: [host_state]</code> for their state.")),
        wide_html, reps_html, summary_html,
        _provenance_section(provenance, tot),
        "</body></html>",
    ])
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
