"""HTML report of a campaign: scaling, fits, collapse, over-commit, comparability warnings, provenance.

`build_report` writes `out_dir/report.html`, `out_dir/summary.csv` (median and spread of every cell) and the
figures as PNG files in `out_dir/img/` (drawn at twice the size shown), referenced from the HTML by relative path
(so the directory is the report: copy or serve it whole). Figures are limited to `max_figures`; tables always
cover every slice. Every axis with more than one value is part of each cell's key in the tables, summary.csv,
figures and legends, under its own name (runner.analysis.axes). A section the campaign has no data for says in
one line what the matrix needs to get it.
"""

from __future__ import annotations

import html
import multiprocessing
import os
import re
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis import plots
from runner.analysis.adaptive import AT_MAX, OPEN, TIGHT, repetition_table
from runner.analysis.axes import AXIS_PREFIX, label as _label, own_names, shown, shown_frame, with_trial_axes
from runner.analysis.collapse import DEFAULT_DROP, Collapse
from runner.analysis.findings import findings_section
from runner.analysis.overcommit import VMS_AXIS, overcommit_table
# _ci and _peak stay importable from here, where they were (tests/test_report_polish.py)
from runner.analysis.page import _CSS, _ci as _ci, _fmt, _hint, _label_columns, _table, _warn
from runner.analysis.report_drift import _drift_section
from runner.analysis.report_hosts import _provenance_section
from runner.analysis.report_scaling import _explain_section, _metric_scales, _peak as _peak, _scaling_sections
from runner.analysis.stats import (
    DEFAULT_TARGET,
    as_pandas,
    cell_stats,
    check_metrics,
    param_columns,
    scaling_axis,
    totals,
)
from runner.errors import BadDatasetError, UsageError
from runner.provision import environments
from runner.records.schema import ordinary_role

INLINE_FIGURES = 1  # figures drawn in the report's own process; the rest in up to 2 forked worker processes (_Report)
HTML_ROWS = 2000  # cells shown in the HTML summary table; summary.csv has all


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
