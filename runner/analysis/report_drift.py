"""The report's drift and host state section: the canary over time per host with the drift rule's verdict, and
the host state of every batch (runner.analysis.drift), with their warnings."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from runner.analysis import plots
from runner.analysis.drift import (
    LAST,
    STATE_SAMPLE_S,
    canary_metric,
    canary_rhythm,
    canary_series,
    drift_table,
    drift_warnings,
    false_alarm_rate,
    host_warnings,
    state_differences,
    state_readings,
    trial_states,
)
from runner.analysis.page import Page, _fmt, _table


def _drift_section(rep: Page, metrics: pd.DataFrame, trials: pd.DataFrame | None, provenance: dict[str, Any]) -> str:
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
