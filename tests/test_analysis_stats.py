"""Per-cell statistics, repetitions needed, bootstrap intervals, polars input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from runner.analysis import bootstrap_ci, cell_stats, repetitions_needed, scaling_axis, summary_table, totals
from runner.errors import DatasetError


def frame(values: dict[int, list[float]]) -> pd.DataFrame:
    rows = []
    for threads, vals in values.items():
        for rep, v in enumerate(vals, 1):
            base = {"campaign": "c", "trial_id": f"t{threads}-{rep}", "cell_id": f"cell{threads}", "repetition": rep,
                    "attempt": 1, "host": "h1", "env": "host", "accel": "none", "metric": "throughput",
                    "unit": "ops/s", "higher_is_better": True, "workload": "lockbench", "threads": threads}
            rows.append({**base, "value": v, "thread": None, "vm": None})
            rows.append({**base, "value": v / threads, "thread": 0, "vm": None})  # a per-thread row, not a total
    df = pd.DataFrame(rows)
    df["thread"] = df["thread"].astype("Int32")
    df["vm"] = df["vm"].astype("Int32")
    return df


def test_cell_stats_by_hand():
    df = frame({1: [10, 11, 12, 13, 14], 2: [20, 20, 40, 20, 20]})
    st = cell_stats(df).set_index("threads")
    assert list(st["n"]) == [5, 5]
    assert st.loc[1, "median"] == 12 and st.loc[1, "q1"] == 11 and st.loc[1, "q3"] == 13
    assert st.loc[1, "iqr"] == 2 and st.loc[1, "rel_iqr"] == pytest.approx(2 / 12)
    # robust 95% half-width: 1.96 * 1.2533 * (IQR / 1.349) / sqrt(n)
    half = 1.959964 * 1.253314 * (2 / 1.348980) / np.sqrt(5)
    assert st.loc[1, "ci_rel"] == pytest.approx(half / 12, rel=1e-5)
    assert st.loc[1, "wide"]  # ~14% > 5%
    assert st.loc[1, "reps_needed"] == int(np.ceil(5 * (half / 12 / 0.05) ** 2))
    assert not st.loc[2, "wide"] and st.loc[2, "iqr"] == 0


def test_repetitions_needed():
    assert list(repetitions_needed(np.array([0.10, 0.02, np.nan]), np.array([5, 5, 5]))) == [20, 5, -1]
    assert int(repetitions_needed(0.2, 1)) == -1  # one repetition: no spread to extrapolate from


def test_totals_and_axis_detection():
    df = frame({1: [1.0], 2: [2.0], 4: [3.0]})
    assert len(totals(df)) == 3 and len(totals(df, "latency")) == 0
    assert scaling_axis(df) == "threads"
    assert scaling_axis(df.drop(columns="threads")) is None


def test_bootstrap_ci_reproducible():
    x = np.random.default_rng(0).normal(100, 5, 30)
    a = bootstrap_ci(x, n_boot=2000, seed=4)
    assert a == bootstrap_ci(x, n_boot=2000, seed=4)
    assert a[0] < np.median(x) < a[1]
    lo, hi = bootstrap_ci(x, np.mean, n_boot=2000, seed=4)
    assert lo < 100 < hi
    with pytest.raises(DatasetError):
        bootstrap_ci([])


def test_polars_accepted_and_bad_input():
    df = frame({1: [10, 11, 12], 2: [20, 21, 22]})
    a = summary_table(df)
    b = summary_table(pl.from_pandas(df))
    assert list(a["median"]) == list(b["median"]) == [11, 21]
    with pytest.raises(DatasetError, match="lacks column"):
        cell_stats(df.drop(columns="value"))
    with pytest.raises(DatasetError, match="pandas or polars"):
        cell_stats([1, 2, 3])
