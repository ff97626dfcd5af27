"""Drift and comparability: the canary's runs over time, the host state of each batch of trials, and the
differences between the trials that are compared. Pure functions over the campaign's tables.

The canary (matrix key `canary`, runner.execution.canary) is one cell re-run on each host before its first
trial, then after every N trials and/or M minutes and after its last trial; its runs have role `canary`. A host **drifts** when, in time order, the
last `LAST` (3) canary runs on it all lie outside the range [min, max] of its first `REFERENCE` (5) runs, on
the same side, and their median differs from the reference median by more than `MIN_SHIFT` (2%). The range of
the first runs is the canary's own spread; the rule needs no distribution: if the host does not change, the
runs are exchangeable and the chance that the last 3 all land beyond the extremes of the first 5, on one side,
is 2 / C(8, 3) = 3.6%. A 2-sigma step of normal noise is caught half the time, a 3-sigma step 84% of the time
(simulated). With fewer runs the reference is the first n - 3 (at least 4: 2 / C(7, 3) = 5.7%); below 7 runs
there is no verdict. The rule judges the end of the campaign; the plot shows the whole series.

The **host state** of a batch is what the `host_state` probe read at the canary run that opened it (or at the
trial itself, when the matrix asks for host_state on every trial): governor, turbo, NUMA balancing,
irqbalance, the busy share of the CPUs while no trial ran, and whether the thermal throttle count rose before
the next reading. Every trial takes the state of the last reading on its host at or before its start (the
first reading for trials before it). Trials that are compared (the cells of a campaign's figures, the two
sides of `runner compare`) and ran under different states are reported, key by key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis.adaptive import deciding_metric
from runner.analysis.fmt import number
from runner.analysis.stats import as_pandas
from runner.records.schema import ordinary_role

CANARY = "canary"  # the role of a canary run (runner.trials.CANARY; the dataset's `role` column)
REFERENCE = 5  # canary runs whose range is the reference
LAST = 3  # latest canary runs judged against it
MIN_REFERENCE = 4  # fewest reference runs for a verdict
MIN_SHIFT = 0.02  # a drift also moves the median by more than this (relative)
BUSY = 0.10  # a batch is busy when other processes used at least this share of the CPUs before it
STATE_SAMPLE_S = 0.25  # the host_state probe's window for that share (runner.probes.host_state.SAMPLE_S)
STATE_PREFIX = "host_state."
STATE_KEYS = ("governor", "turbo", "numa_balancing", "irqbalance", "load", "throttling")


@dataclass(frozen=True)
class Drift:
    """The drift rule's verdict on one host's canary series (see the module docstring)."""

    runs: int
    reference: int  # runs in the reference (0: no verdict)
    ref_median: float
    ref_low: float  # range of the reference runs
    ref_high: float
    last_median: float  # median of the last LAST runs
    shift: float  # last_median / ref_median - 1
    drifted: bool | None  # None: too few runs to judge
    direction: str  # "above" | "below" | ""


def drift_rule(values: Sequence[float], *, reference: int = REFERENCE, last: int = LAST,
               min_reference: int = MIN_REFERENCE, min_shift: float = MIN_SHIFT) -> Drift:
    """Judge one canary series, in time order (NaN values, failed runs, are left out)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(x.size)
    r = min(reference, n - last)
    if r < min_reference:
        med = float(np.median(x)) if n else math.nan
        return Drift(n, 0, med, float(x.min()) if n else math.nan, float(x.max()) if n else math.nan,
                     float(np.median(x[-last:])) if n else math.nan, math.nan, None, "")
    ref, tail = x[:r], x[-last:]
    ref_med, tail_med = float(np.median(ref)), float(np.median(tail))
    shift = tail_med / ref_med - 1 if ref_med else (math.inf if tail_med else 0.0)
    direction = "above" if (tail > ref.max()).all() else "below" if (tail < ref.min()).all() else ""
    drifted = bool(direction) and abs(shift) > min_shift
    return Drift(n, r, ref_med, float(ref.min()), float(ref.max()), tail_med, shift, drifted, direction if drifted else "")


def false_alarm_rate(reference: int = REFERENCE, last: int = LAST) -> float:
    """The chance the rule fires on a host that does not change (exchangeable runs): 2 / C(r + k, k)."""
    return 2 / math.comb(reference + last, last)


# -- the canary's series --------------------------------------------------------------------------------------

def canary_rhythm(spec: Mapping[str, Any]) -> str:
    """How often the canary ran, from the campaign's provenance `canary` (every, minutes; a campaign recorded
    before `minutes` has only every), for the report: 'every 10 trials or 30 minutes (whichever came first)'."""
    every, minutes = spec.get("every"), spec.get("minutes")
    limits = [f"{every} trials" if every is not None else "", f"{number(float(minutes))} minutes" if minutes is not None else ""]
    if not any(limits):
        return "every ? trials"
    return "every " + " or ".join(x for x in limits if x) + (" (whichever came first)" if all(limits) else "")


def canary_metric(metrics: pd.DataFrame, chosen: str | None = None) -> str | None:
    """The metric the canary is watched on: `chosen` (the matrix's canary.metric), else throughput, else the
    first higher-is-better metric of the canary runs' totals."""
    rows = _canary_totals(metrics)
    if rows.empty:
        return None
    hib = rows["higher_is_better"] if "higher_is_better" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    pairs = {str(m): (None if pd.isna(h) else bool(h)) for m, h in zip(rows["metric"], hib, strict=True)}
    return deciding_metric(pairs.items(), chosen)


def _canary_totals(metrics: pd.DataFrame) -> pd.DataFrame:
    if "role" not in metrics.columns:
        return metrics.iloc[:0]
    mask = (metrics["role"] == CANARY).fillna(False).to_numpy(dtype=bool, copy=True)
    for col in ("thread", "vm", "probe"):
        if col in metrics.columns:
            mask &= metrics[col].isna().to_numpy()
    return metrics[mask]


def canary_series(metrics: Any, trials: Any = None, metric: str | None = None) -> pd.DataFrame:
    """The canary runs of `metric` (see canary_metric), one row each, in time order per host: host, trial_id,
    run (its number on the host), started_at (NaT without a trials table: then run order), value, cell_id."""
    m = as_pandas(metrics)
    cols = ["host", "trial_id", "run", "started_at", "value", "cell_id"]
    metric = canary_metric(m, metric) if metric is None or m.empty else metric
    rows = _canary_totals(m)
    if metric is None or rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows[(rows["metric"] == metric).to_numpy()]
    out = pd.DataFrame({"host": rows["host"].astype(str).to_numpy(), "trial_id": rows["trial_id"].to_numpy(),
                        "run": rows["repetition"].astype(int).to_numpy(), "value": rows["value"].astype(float).to_numpy(),
                        "cell_id": rows["cell_id"].to_numpy()})
    out["started_at"] = pd.NaT
    if trials is not None:
        t = as_pandas(trials)
        if {"trial_id", "started_at"} <= set(t.columns) and not t.empty:
            ok = t[t["status"] == "ok"] if "status" in t.columns else t
            when = ok.drop_duplicates("trial_id", keep="last").set_index("trial_id")["started_at"]
            out["started_at"] = out["trial_id"].map(when)
    return out.sort_values(["host", "started_at", "run"], kind="stable")[cols].reset_index(drop=True)


def drift_table(series: pd.DataFrame) -> pd.DataFrame:
    """drift_rule per host of a canary_series: host, runs, reference, ref_median, ref_low, ref_high,
    last_median, shift, drifted, direction."""
    rows = []
    for host, s in series.groupby("host", sort=True):
        rows.append({"host": host, **drift_rule(s["value"].to_numpy(dtype=float)).__dict__})
    cols = ["host", *Drift.__dataclass_fields__]
    return pd.DataFrame(rows, columns=cols)


def drift_warnings(table: pd.DataFrame, cell: str, metric: str) -> list[str]:
    """One line per host whose canary drifted."""
    out = []
    for r in table.itertuples():
        if r.drifted is True:
            out.append(f"host {r.host}: the canary ({cell}) drifted: its last {LAST} runs all lie {r.direction} the range "
                       f"of its first {r.reference} ({number(r.ref_low)}..{number(r.ref_high)} {metric}), median "
                       f"{100 * r.shift:+.1f}%; the cells measured late on this host are not comparable with the early ones")
    return out


# -- host state, batch by batch -----------------------------------------------------------------------------

def state_readings(metrics: Any, trials: Any = None) -> pd.DataFrame:
    """One row per host_state reading (the host side): host, trial_id, at (the trial's start; NaT without a
    trials table), governor, turbo, numa_balancing, irqbalance, busy, load1, procs_running, throttle_count,
    then per host in time order `throttle_rise` (the rise of the throttle count until the next reading)."""
    m = as_pandas(metrics)
    cols = ["host", "trial_id", "at", "governor", "turbo", "numa_balancing", "irqbalance", "busy", "load1",
            "procs_running", "throttle_count", "throttle_rise"]
    if "probe" not in m.columns:
        return pd.DataFrame(columns=cols)
    mask = (m["probe"] == "host_state").fillna(False).to_numpy(dtype=bool, copy=True)
    if "side" in m.columns:
        mask &= (m["side"] != "guest").fillna(True).to_numpy(dtype=bool)
    rows = m[mask]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for host, tid, name, value in zip(rows["host"].astype(str), rows["trial_id"], rows["metric"], rows["value"], strict=True):
        rec = found.setdefault((host, tid), {"host": host, "trial_id": tid, "governors": {}})
        key = str(name).removeprefix(STATE_PREFIX)
        if key.startswith("governor."):
            rec["governors"][key.removeprefix("governor.")] = int(value)
        else:
            rec[key] = float(value)
    out = pd.DataFrame([{**r, "governor": _governor(r.pop("governors"))} for r in found.values()])
    for c in cols:
        if c not in out.columns:
            out[c] = np.nan
    out["at"] = pd.NaT
    if trials is not None:
        t = as_pandas(trials)
        if {"trial_id", "started_at"} <= set(t.columns) and not t.empty:
            out["at"] = out["trial_id"].map(t.drop_duplicates("trial_id", keep="last").set_index("trial_id")["started_at"])
    out = out.sort_values(["host", "at"], kind="stable").reset_index(drop=True)
    rise = out.groupby("host", sort=False)["throttle_count"].transform(lambda s: s.shift(-1) - s)
    out["throttle_rise"] = rise
    return out[cols]


def _governor(governors: Mapping[str, int]) -> str | None:
    """'performance', or 'performance x2, powersave x1' when the policies differ; None without cpufreq."""
    if not governors:
        return None
    if len(governors) == 1:
        return next(iter(governors))
    return ", ".join(f"{g} x{n}" for g, n in sorted(governors.items()))


def state_labels(readings: pd.DataFrame) -> pd.DataFrame:
    """The readings as comparable labels (STATE_KEYS): governor, turbo on/off, numa_balancing mode, irqbalance
    running/stopped, load busy/quiet (busy: other processes used >= BUSY of the CPUs), throttling yes/no (the
    throttle count rose before the next reading). Unknown values are None."""
    def label(v: Any, yes: str, no: str) -> str | None:
        return None if v is None or pd.isna(v) else (yes if float(v) > 0 else no)

    out = readings[["host", "trial_id", "at"]].copy()
    out["governor"] = readings["governor"]
    out["turbo"] = [label(v, "on", "off") for v in readings["turbo"]]
    out["numa_balancing"] = [None if pd.isna(v) else str(int(v)) for v in readings["numa_balancing"]]
    out["irqbalance"] = [label(v, "running", "stopped") for v in readings["irqbalance"]]
    out["load"] = [None if pd.isna(v) else ("busy" if v >= BUSY else "quiet") for v in readings["busy"]]
    out["throttling"] = [label(v, "yes", "no") for v in readings["throttle_rise"]]
    return out


def trial_states(readings: pd.DataFrame, trials: Any) -> pd.DataFrame:
    """Every trial (role null) with the state labels of its batch: the last reading on its host at or before
    its start, else the first one after (columns: the trials' trial_id, cell_id, host, started_at and STATE_KEYS)."""
    t = as_pandas(trials)
    keep = [c for c in ("trial_id", "cell_id", "host", "started_at") if c in t.columns]
    if "role" in t.columns:
        t = t[ordinary_role(t["role"])]
    t = t.drop_duplicates("trial_id", keep="last")[keep].copy()
    labels = state_labels(readings)
    if t.empty or labels.empty or "started_at" not in t.columns or labels["at"].isna().all():
        return pd.DataFrame(columns=[*keep, *STATE_KEYS])
    t["host"] = t["host"].astype(str)
    labels = labels.dropna(subset=["at"])
    parts = []
    for host, rows in t.groupby("host", sort=False):
        lab = labels[labels["host"] == host].sort_values("at").drop(columns=["host", "trial_id"])
        if lab.empty:
            continue
        rows = rows.sort_values("started_at")
        back = pd.merge_asof(rows, lab, left_on="started_at", right_on="at", direction="backward")
        early = back["at"].isna().to_numpy()
        if early.any():  # trials before the first reading take the first one
            first = lab.iloc[0]
            for key in STATE_KEYS:
                back.loc[early, key] = first[key]
        parts.append(back.drop(columns=["at"]))
    if not parts:
        return pd.DataFrame(columns=[*keep, *STATE_KEYS])
    return pd.concat(parts, ignore_index=True)


def state_differences(states: pd.DataFrame, what: str) -> list[str]:
    """Lines naming the state keys under which the trials of `what` (the cells compared) differ: for each key
    with two or more values, every value with its trials and cells."""
    out = []
    for key in STATE_KEYS:
        if key not in states.columns:
            continue
        known = states[states[key].notna()]
        values = known.groupby(key, sort=True)
        if len(values) < 2:
            continue
        parts = [f"{v} ({len(g)} trials, {g['cell_id'].nunique() if 'cell_id' in g.columns else '?'} cells)" for v, g in values]
        out.append(f"{what}: its trials ran under different host state: {key} {', '.join(parts)}; compare its cells with care")
    return out


def compare_states(a: pd.DataFrame, b: pd.DataFrame, label_a: str, label_b: str) -> list[str]:
    """Lines naming the state keys whose values differ between the trials of side A and side B."""
    out = []
    for key in STATE_KEYS:
        va = sorted(set(a[key].dropna())) if key in a.columns else []
        vb = sorted(set(b[key].dropna())) if key in b.columns else []
        if va and vb and va != vb:
            out.append(f"host state differs: {key} {', '.join(map(str, va))} in {label_a}, {', '.join(map(str, vb))} in {label_b}")
    return out


def host_warnings(readings: pd.DataFrame) -> list[str]:
    """Per host: other processes' load before some batches, throttling during some, and state that changed."""
    out = []
    labels = state_labels(readings)
    for host, r in readings.groupby("host", sort=True):
        lab = labels.loc[r.index]
        busy = r["busy"].dropna()
        loaded = busy[busy >= BUSY]
        if len(loaded):
            out.append(f"host {host}: other processes kept {100 * loaded.max():.0f}% of the CPUs busy (at most) before "
                       f"{len(loaded)} of {len(busy)} batches (host_state.busy >= {100 * BUSY:.0f}% while no trial ran); "
                       "their trials shared the host")
        rise = r["throttle_rise"].dropna()
        if (rise > 0).any():
            out.append(f"host {host}: the CPUs were thermally throttled in {int((rise > 0).sum())} of {len(rise)} batches "
                       f"({int(rise[rise > 0].sum())} throttle events)")
        for key in ("governor", "turbo", "numa_balancing", "irqbalance"):
            seq = [v for v in lab[key] if v is not None and not (isinstance(v, float) and math.isnan(v))]
            changes = [f"{x} -> {y}" for x, y in pairwise(seq) if x != y]
            if changes:
                out.append(f"host {host}: {key} changed during the campaign ({'; '.join(changes[:3])})")
    return out


# -- host facts (the fingerprint taken at launch) ----------------------------------------------------------------

FACT_KEYS = ("cpu_model", "cores", "numa_nodes", "kernel", "cmdline", "microcode", "smt", "turbo", "thp", "governor",
             "irqbalance", "mitigations")


def host_summary(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts that make two hosts comparable, from a host's facts file: the collector's nested form
    (hosts/<host>.json, see runner.provision.fingerprint.summarize) or an already flat summary."""
    def sub(key: str) -> Mapping[str, Any]:
        v = facts.get(key)
        return v if isinstance(v, Mapping) else {}

    cpu, kernel = sub("cpu"), sub("kernel")
    policies = sub("cpufreq").get("policies") or {}
    governors = {p.get("governor") for p in policies.values() if isinstance(p, Mapping)}
    flat = {
        "cpu_model": cpu.get("model"),
        "cores": cpu.get("cores"),
        "numa_nodes": len(sub("numa").get("nodes") or []) if sub("numa") else None,
        "kernel": kernel.get("release"),
        "cmdline": kernel.get("cmdline"),
        "microcode": cpu.get("microcode"),
        "smt": sub("smt").get("control"),
        "turbo": sub("turbo").get("enabled"),
        "thp": sub("thp").get("enabled"),
        "governor": (governors.pop() if len(governors) == 1 else "mixed") if governors else None,
        "irqbalance": sub("irqbalance").get("running"),
    }
    for key in FACT_KEYS:  # a flat summary (or a flat key beside the nested ones) wins
        v = facts.get(key)
        if v is not None and not isinstance(v, Mapping):
            flat[key] = v
    return {k: flat.get(k) for k in FACT_KEYS}


def facts_differ(hosts: Iterable[str], facts: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(fact keys whose values differ between the hosts, hosts without facts)."""
    hosts = sorted(set(map(str, hosts)))
    missing = [h for h in hosts if h not in facts]
    known = [host_summary(facts[h]) for h in hosts if h in facts]
    differ = [k for k in FACT_KEYS if len({repr(f.get(k)) for f in known}) > 1]
    return differ, missing


def compare_facts(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]], label_a: str, label_b: str) -> list[str]:
    """Lines naming the host facts that differ between the hosts of side A and side B."""
    sa = [host_summary(f) for f in a.values()]
    sb = [host_summary(f) for f in b.values()]
    out = []
    for key in FACT_KEYS:
        va = sorted({repr(f[key]) for f in sa if f[key] is not None})
        vb = sorted({repr(f[key]) for f in sb if f[key] is not None})
        if va and vb and va != vb:
            out.append(f"hosts differ: {key} {', '.join(va)} in {label_a}, {', '.join(vb)} in {label_b}")
    return out



@dataclass(frozen=True)
class Side:
    """One side of a comparison: a campaign's metrics and trials (all of them: the host state is read from its
    canary runs), its host facts by host, and the ids of the trials compared (None: every trial)."""

    metrics: Any
    trials: Any
    facts: Mapping[str, Any]
    trial_ids: frozenset[str] | None = None


def comparability_warnings(a: Side, b: Side, label_a: str, label_b: str) -> list[str]:
    """What makes side B not comparable with side A: host facts that differ between the hosts the compared
    trials ran on, and host state (batch by batch) that differs between the sides or within one."""
    sides = []
    for side in (a, b):
        m = as_pandas(side.metrics)
        t = as_pandas(side.trials) if side.trials is not None else None
        chosen = m if side.trial_ids is None else m[m["trial_id"].isin(side.trial_ids).to_numpy()]
        hosts = set(map(str, chosen["host"].dropna().unique())) if "host" in chosen.columns else set()
        facts = {str(h): f for h, f in (side.facts or {}).items() if str(h) in hosts}
        states = pd.DataFrame(columns=list(STATE_KEYS))
        if t is not None and not t.empty:
            states = trial_states(state_readings(m, t), t)
            if side.trial_ids is not None and not states.empty:
                states = states[states["trial_id"].isin(side.trial_ids).to_numpy()]
        sides.append((facts, states))
    (fa, sa), (fb, sb) = sides
    out = compare_facts(fa, fb, label_a, label_b) + compare_states(sa, sb, label_a, label_b)
    for states, label in ((sa, label_a), (sb, label_b)):
        out += state_differences(states, label)
    return out
