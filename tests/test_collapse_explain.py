"""The report explains a collapse (runner.analysis.explain): the probes' figures at the load before the
collapse point and at it, side by side, also per operation of the workload."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.analysis import build_report
from runner.analysis.explain import explain_collapses, explain_slice
from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials


def campaign(probes: bool = True) -> pd.DataFrame:
    """ticket collapses past 2 threads, ttas does not; lockbench's total_ops; perf_stat and schedstat rows that
    explain it (context switches and run delay jump at 3 threads for ticket), one canary run that must not count."""
    m = synthetic_metrics(axes={"lock": ["ticket", "ttas"], "threads": [1, 2, 3, 4]}, reps=5, per_thread=False,
                          law=lambda p: Law(0.05, 0.001, 1e6, collapse_at=2 if p["lock"] == "ticket" else np.inf, after=0.1))
    tot = m.copy()
    ops = tot.assign(metric="total_ops", unit="ops", value=tot["value"] * 0.5)
    frames = [m, ops]
    if probes:
        bad = ((tot["lock"] == "ticket") & (tot["threads"] > 2)).to_numpy()
        frames.append(tot.assign(metric="perf_stat.context_switches", unit="switches", higher_is_better=None, probe="perf_stat",
                                 side="host", value=np.where(bad, 40000.0, 200.0)))
        frames.append(tot.assign(metric="schedstat.delay_ratio", unit="fraction", higher_is_better=False, probe="schedstat",
                                 side="host", value=np.where(bad, 0.6, 0.01)))
        frames.append(tot.assign(metric="schedstat.run_delay_s", unit="s", higher_is_better=False, probe="schedstat",
                                 side="host", value=np.where(bad, 0.3, 0.001)))
    canary = tot[(tot["lock"] == "ticket") & (tot["threads"] == 2)].head(1).assign(role="canary", trial_id="canary", value=1.0)
    frames.append(canary)
    return pd.concat(frames, ignore_index=True)


def test_the_figures_before_and_at_the_collapse() -> None:
    (e,) = explain_collapses(campaign(), ["throughput"], axis="threads")
    assert (e.before_n, e.after_n, e.peak_n, e.probes) == (2.0, 3.0, 2.0, 3)
    assert e.params["lock"] == "ticket" and e.label == "metric=throughput lock=ticket"
    t = e.table.set_index("figure")
    assert list(t.index) == ["throughput", "perf_stat.context_switches", "perf_stat.context_switches per op",
                             "schedstat.delay_ratio", "schedstat.run_delay_s", "schedstat.run_delay_s per op"]
    assert list(t["kind"]) == ["result", "probe", "per op", "probe", "probe", "per op"]
    assert (t.at["perf_stat.context_switches", "before"], t.at["perf_stat.context_switches", "after"]) == (200.0, 40000.0)
    assert t.at["perf_stat.context_switches", "change"] == pytest.approx(200.0)
    m = campaign()
    reps = m[(m["metric"] == "throughput") & (m["lock"] == "ticket") & (m["threads"] == 2) & m["role"].isna()]["value"]
    assert len(reps) == 5 and t.at["throughput", "before"] == reps.median()  # the canary run is not among them
    assert t.at["throughput", "change"] == pytest.approx(0.1 * (3 / 1.106) / (2 / 1.052), rel=0.1)  # USL x 0.1 past the collapse
    # per operation: trial by trial, then the median; the unit says so
    assert t.at["perf_stat.context_switches per op", "unit"] == "switches/op"
    assert t.at["perf_stat.context_switches per op", "change"] > 1000
    assert "schedstat.delay_ratio per op" not in t.index  # a fraction is not a count


def test_no_collapse_nothing_to_explain_and_no_probes_only_the_result() -> None:
    m = campaign(probes=False)
    assert explain_collapses(m[m["lock"] == "ttas"], ["throughput"], axis="threads") == []
    (e,) = explain_collapses(m, ["throughput"], axis="threads")
    assert e.probes == 0 and list(e.table["figure"]) == ["throughput"]


def test_a_slice_without_the_before_load() -> None:
    t = explain_slice(campaign(), {"metric": "throughput", "lock": "ticket", "campaign": "synthetic"}, "threads", 9.0, 3.0)
    assert math.isnan(t.set_index("figure").at["throughput", "before"])
    assert math.isnan(t.set_index("figure").at["throughput", "change"])


def test_report_has_the_collapse_table(tmp_path: Path) -> None:
    m = campaign()
    doc = build_report(m, synthetic_trials(m), synthetic_provenance("synthetic"), tmp_path, bootstrap=10,
                       scaling_metrics={"lockbench": ["throughput"]}).read_text()
    assert "<h2>Collapse explained</h2>" in doc
    section = doc[doc.index("<h2>Collapse explained</h2>"):]
    section = section[:section.index("<h2>", 5)]
    assert "lock=ticket: collapse at threads = 3 (-" in section
    text = " ".join(re.sub(r"<[^>]+>", " ", section).split())
    assert "figure unit threads = 2 threads = 3 change" in text
    assert "perf_stat.context_switches switches 200 4e+04 200x" in text
    assert "No probe was recorded" not in section


def test_report_says_how_to_record_probes(tmp_path: Path) -> None:
    m = campaign(probes=False)
    doc = build_report(m, synthetic_trials(m), synthetic_provenance("synthetic"), tmp_path, bootstrap=10,
                       scaling_metrics={"lockbench": ["throughput"]}).read_text()
    assert "No probe was recorded at these cells: add <code>probes: [perf_stat, schedstat]</code>" in doc
