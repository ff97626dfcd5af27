"""Drift and comparability (runner.analysis.drift): the drift rule, the canary's series, the host state of each
batch, the warnings for compared trials in the report and in `runner compare`."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.analysis import build_report
from runner.analysis.drift import (
    CANARY,
    Side,
    canary_metric,
    canary_series,
    comparability_warnings,
    drift_rule,
    drift_table,
    drift_warnings,
    facts_differ,
    false_alarm_rate,
    host_summary,
    host_warnings,
    state_differences,
    state_labels,
    state_readings,
    trial_states,
)
from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials

T0 = pd.Timestamp("2026-01-01", tz="UTC")


# -- the rule --------------------------------------------------------------------------------------------------

def test_a_steady_canary_does_not_drift() -> None:
    d = drift_rule([100, 103, 98, 101, 99, 102, 100, 97, 101])
    assert (d.runs, d.reference, d.drifted, d.direction) == (9, 5, False, "")
    assert (d.ref_low, d.ref_high, d.ref_median) == (98, 103, 100)


def test_the_last_runs_beyond_the_reference_range_drift() -> None:
    d = drift_rule([100, 103, 98, 101, 99, 102, 80, 82, 81])
    assert d.drifted is True and d.direction == "below" and d.last_median == 81
    assert d.shift == pytest.approx(81 / 100 - 1)
    up = drift_rule([100, 103, 98, 101, 99, 120, 118, 121])
    assert up.drifted is True and up.direction == "above"


def test_one_run_inside_the_range_or_a_tiny_shift_is_no_drift() -> None:
    assert drift_rule([100, 103, 98, 101, 99, 80, 100, 81]).drifted is False  # 100 is inside the range
    # all beyond a very tight range, but by 1%: below the 2% floor
    assert drift_rule([100.0, 100.1, 99.9, 100.0, 100.05, 101, 101, 101]).drifted is False


def test_too_few_runs_have_no_verdict_and_failures_are_left_out() -> None:
    d = drift_rule([100, 90, 80, 70, 60, 50])
    assert d.drifted is None and d.reference == 0 and d.runs == 6
    # 7 runs: the first 4 are the reference
    assert drift_rule([100, 101, 99, 100, 70, 71, 72]).reference == 4
    assert drift_rule([100, math.nan, 101, 99, 100, 70, 71, 72]).runs == 7


def test_the_false_alarm_rate_is_what_the_docs_say() -> None:
    assert false_alarm_rate() == pytest.approx(2 / 56) == pytest.approx(0.0357, abs=1e-4)
    assert false_alarm_rate(4, 3) == pytest.approx(2 / 35)
    rng = np.random.default_rng(7)
    fired = sum(bool(drift_rule(rng.standard_normal(8) + 100, min_shift=0).drifted) for _ in range(4000))
    assert abs(fired / 4000 - false_alarm_rate()) < 0.015


# -- the canary's series -----------------------------------------------------------------------------------------

def canary_frames(values: dict[str, list[float]], state: dict[str, list[dict]] | None = None, *, every_s: float = 60.0):
    """Metrics and trials of canary runs on each host (role canary), with host_state rows where given."""
    rows, trials = [], []
    for host, vals in values.items():
        for k, v in enumerate(vals, 1):
            tid = f"{host}-c{k}"
            base = {"campaign": "c", "trial_id": tid, "cell_id": "cx", "repetition": k, "attempt": 1, "host": host, "env": "host",
                    "accel": "none", "role": CANARY, "workload": "lockbench", "lock": "ttas", "threads": 2}
            rows.append({**base, "metric": "throughput", "value": v, "unit": "ops/s", "higher_is_better": True})
            rows.append({**base, "metric": "thread_ops", "value": v / 2, "unit": "ops", "higher_is_better": True, "thread": 0})
            for name, value in ((state or {}).get(host, [{}] * len(vals))[k - 1]).items():
                rows.append({**base, "metric": f"host_state.{name}", "value": value, "unit": "", "probe": "host_state", "side": "host"})
            trials.append({**base, "status": "ok", "started_at": T0 + pd.Timedelta(seconds=every_s * (k - 1))})
    return pd.DataFrame(rows), pd.DataFrame(trials)


def test_canary_series_in_time_order_per_host() -> None:
    m, t = canary_frames({"b": [5.0, 6.0], "a": [1.0, 2.0, 3.0]})
    t = t.sample(frac=1, random_state=1)  # order of the files on disk is no order
    s = canary_series(m, t)
    assert list(s["host"]) == ["a", "a", "a", "b", "b"] and list(s["value"]) == [1.0, 2.0, 3.0, 5.0, 6.0]
    assert list(s["run"]) == [1, 2, 3, 1, 2] and s["started_at"].is_monotonic_increasing is False
    assert canary_metric(m) == "throughput" and canary_metric(m, "thread_ops") == "thread_ops"
    assert canary_series(m.drop(columns=["role"])).empty  # an old dataset has no canary


def test_drift_table_and_warning() -> None:
    m, t = canary_frames({"a": [100, 103, 98, 101, 99, 102, 80, 82, 81], "b": [100, 103, 98, 101, 99, 102, 100, 97, 101]})
    table = drift_table(canary_series(m, t))
    assert dict(zip(table["host"], table["drifted"])) == {"a": True, "b": False}
    (line,) = drift_warnings(table, "lock=ttas threads=2", "throughput")
    assert line.startswith("host a: the canary (lock=ttas threads=2) drifted: its last 3 runs all lie below the range of its first 5")
    assert "median -19.0%" in line


# -- host state, batch by batch -----------------------------------------------------------------------------------

STEADY = {"governor.performance": 4, "turbo": 1, "numa_balancing": 0, "irqbalance": 0, "busy": 0.01, "throttle_count": 5}


def test_state_readings_and_labels() -> None:
    states = [dict(STEADY), dict(STEADY, busy=0.4), dict(STEADY, throttle_count=9), {**STEADY, "governor.performance": 2, "governor.powersave": 2}]
    m, t = canary_frames({"a": [1.0, 1.0, 1.0, 1.0]}, {"a": states})
    r = state_readings(m, t)
    assert list(r["governor"]) == ["performance", "performance", "performance", "performance x2, powersave x2"]
    assert list(r["throttle_rise"].fillna(-1)) == [0, 4, -4, -1]
    lab = state_labels(r)
    assert list(lab["load"]) == ["quiet", "busy", "quiet", "quiet"]
    assert [x if isinstance(x, str) else None for x in lab["throttling"]] == ["no", "yes", "no", None]
    assert list(lab["turbo"]) == ["on"] * 4 and list(lab["numa_balancing"]) == ["0"] * 4
    warnings = host_warnings(r)
    assert any("other processes kept 40% of the CPUs busy (at most) before 1 of 4 batches" in w for w in warnings)
    assert any("thermally throttled in 1 of 3 batches (4 throttle events)" in w for w in warnings)
    assert any("governor changed during the campaign (performance -> performance x2, powersave x2)" in w for w in warnings)


def test_every_trial_takes_the_state_of_its_batch() -> None:
    m, t = canary_frames({"a": [1.0, 1.0]}, {"a": [dict(STEADY), dict(STEADY, turbo=0)]}, every_s=100)
    normal = pd.DataFrame({"trial_id": ["x0", "x1", "x2", "y"], "cell_id": ["c1", "c1", "c2", "c3"], "host": ["a", "a", "a", "b"],
                           "role": None, "started_at": [T0 - pd.Timedelta(seconds=5), T0 + pd.Timedelta(seconds=50),
                                                        T0 + pd.Timedelta(seconds=150), T0]})
    trials = pd.concat([t, normal], ignore_index=True)
    st = trial_states(state_readings(m, trials), trials).set_index("trial_id")
    assert st.loc["x0", "turbo"] == "on" and st.loc["x1", "turbo"] == "on" and st.loc["x2", "turbo"] == "off"
    assert "y" not in st.index  # host b had no reading
    assert not st.index.str.contains("-c").any()  # canary runs are not compared
    (line,) = state_differences(st.reset_index(), "campaign c")
    assert line == "campaign c: its trials ran under different host state: turbo off (1 trials, 1 cells), on (2 trials, 1 cells); compare its cells with care"


# -- host facts -----------------------------------------------------------------------------------------------------

RAW = {"cpu": {"model": "Xeon", "cores": 40, "microcode": "0x1"}, "kernel": {"release": "6.1", "cmdline": "quiet"},
       "numa": {"nodes": [{"id": 0}, {"id": 1}]}, "smt": {"control": "on"}, "turbo": {"enabled": True}, "thp": {"enabled": "never"},
       "cpufreq": {"policies": {"policy0": {"governor": "performance"}, "policy1": {"governor": "performance"}}},
       "irqbalance": {"running": False}}


def test_host_summary_reads_the_collectors_facts_and_flat_ones() -> None:
    s = host_summary(RAW)
    assert (s["cpu_model"], s["cores"], s["numa_nodes"], s["kernel"], s["smt"], s["turbo"], s["governor"], s["irqbalance"]) == \
        ("Xeon", 40, 2, "6.1", "on", True, "performance", False)
    assert host_summary({"cpu_model": "A", "kernel": "6.2"})["kernel"] == "6.2"
    other = {**RAW, "kernel": {"release": "6.2", "cmdline": "quiet"}}
    assert facts_differ(["h1", "h2", "h3"], {"h1": RAW, "h2": other}) == (["kernel"], ["h3"])


def test_comparability_between_two_sides() -> None:
    ma, ta = canary_frames({"a": [1.0]}, {"a": [dict(STEADY)]})
    mb, tb = canary_frames({"b": [1.0]}, {"b": [dict(STEADY, turbo=0)]})
    for frame, host in ((ta, "a"), (tb, "b")):
        frame.loc[len(frame)] = {**frame.iloc[0].to_dict(), "trial_id": f"{host}-t", "role": None, "cell_id": "k",
                                 "started_at": T0 + pd.Timedelta(seconds=1)}
    other = {**RAW, "kernel": {"release": "6.2", "cmdline": "quiet"}}
    lines = comparability_warnings(Side(ma, ta, {"a": RAW}), Side(mb, tb, {"b": other}), "A", "B")
    assert lines == ["hosts differ: kernel '6.1' in A, '6.2' in B", "host state differs: turbo on in A, off in B"]
    assert comparability_warnings(Side(ma, ta, {"a": RAW}), Side(ma, ta, {"a": RAW}), "A", "B") == []


# -- in the report and in runner compare ---------------------------------------------------------------------------

def test_report_plots_the_canary_and_warns(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["ttas"], "threads": [1, 2, 4]}, law=lambda p: Law(0.05, 0.001, 1e6), reps=3)
    t = synthetic_trials(m)
    cm, ct = canary_frames({"h1": [100, 103, 98, 101, 99, 102, 80, 82, 81]},
                           {"h1": [dict(STEADY)] * 4 + [dict(STEADY, turbo=0)] * 5}, every_s=3)
    cm["campaign"], ct["campaign"] = "synthetic", "synthetic"
    metrics, trials = pd.concat([m, cm], ignore_index=True), pd.concat([t, ct], ignore_index=True)
    prov = synthetic_provenance("synthetic")
    prov["canary"] = {"cell": {"lock": "ttas", "threads": 2}, "every": 3, "metric": None}
    doc = build_report(metrics, trials, prov, tmp_path, bootstrap=20).read_text()
    assert "<h2>Drift and host state</h2>" in doc and 'src="img/canary.png"' in doc and (tmp_path / "img" / "canary.png").exists()
    warnings = re.findall(r'<div class="warn">(.*?)</div>', doc)
    assert any(w.startswith("host h1: the canary (lock=ttas threads=2) drifted") for w in warnings), warnings
    assert any("turbo changed during the campaign (on -&gt; off)" in w for w in warnings)
    assert any("campaign synthetic: its trials ran under different host state: turbo off" in w for w in warnings)
    assert "And 9 canary runs" in doc
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.loc[(summary["threads"] == 2) & (summary["metric"] == "throughput"), "n"].item() == 3  # not 12
    canary = pd.read_csv(tmp_path / "canary.csv")
    assert len(canary) == 9 and {"value", "turbo", "busy"} <= set(canary.columns)


def test_report_without_canary_has_no_drift_section_but_a_hint(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["ttas"], "threads": [1, 2]}, law=lambda p: Law(0.05, 0.001, 1e6), reps=3)
    doc = build_report(m, synthetic_trials(m), synthetic_provenance("s"), tmp_path, bootstrap=10).read_text()
    assert not (tmp_path / "canary.csv").exists() and "canary" not in ", ".join(p.name for p in (tmp_path / "img").iterdir())
    section = doc[doc.index("<h2>Drift and host state</h2>"):]
    section = section[:section.index("<h2>", 5)]
    assert "Host state, batch by batch" not in section and "<img" not in section and "<table" not in section
    assert "add <code>canary: {cell: {lock: ticket, threads: 2}, every: 10}</code> to the matrix" in section


def _write_campaign(root: Path, name: str, turbo: float, kernel: str) -> None:
    from runner.records.store import AttemptRecord, CampaignStore
    from runner.trials import CANARY as ROLE
    from runner.trials import Trial
    from runner.records.metric import Metric

    store = CampaignStore(root / name)
    types = {"threads": "int"}
    store.initialise(campaign=name, workload="lockbench", matrix_text="x", matrix_sha256="0" * 64, axis_types=types, trial_count=6,
                     seed=0, provenance={"campaign": name})
    store.write_host_facts("h", {**RAW, "kernel": {"release": kernel, "cmdline": "quiet"}})
    now = time.time()
    for i, threads in enumerate((1, 1, 1, 2, 2, 2)):
        t = Trial(name, "lockbench", f"t{i}", f"cell{threads}", i % 3 + 1, (("threads", threads),), (("threads", threads),))
        store.write_attempt(name, "lockbench", types, AttemptRecord.build(
            t, 1, "h", "ok", None, None, started_at=now + i + 1, metrics=[Metric("throughput", 100.0 * threads + i, "ops/s", True)]))
    canary = Trial(name, "lockbench", "c1", "cell1", 1, (("threads", 1),), (("threads", 1),), host="h", role=ROLE)
    state = [Metric("host_state.turbo", turbo, "bool", None, probe="host_state", side="host")]
    store.write_attempt(name, "lockbench", types, AttemptRecord.build(canary, 1, "h", "ok", None, None, started_at=now,
                                                                     metrics=[Metric("throughput", 1.0, "ops/s", True), *state]))


def test_compare_warns_when_the_sides_are_not_comparable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runner.cli.compare import compare_campaigns

    _write_campaign(tmp_path, "a", 1.0, "6.1")
    _write_campaign(tmp_path, "b", 0.0, "6.2")
    html = tmp_path / "cmp.html"
    result = compare_campaigns("a", "b", datasets=tmp_path, html=html)
    out = " ".join(capsys.readouterr().out.split())
    assert result.attrs["warnings"] == ["hosts differ: kernel '6.1' in a, '6.2' in b", "host state differs: turbo on in a, off in b"]
    assert "warning: hosts differ: kernel '6.1' in a, '6.2' in b" in out
    assert "host state differs: turbo on in a, off in b" in html.read_text()
    assert set(result["n_a"]) == {3}  # the canary run is not a repetition of cell threads=1
    same = compare_campaigns("a", None, vary="threads=1,2", datasets=tmp_path)
    assert same.attrs["warnings"] == []
