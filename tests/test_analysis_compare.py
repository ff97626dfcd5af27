"""Cell-by-cell comparison: real differences found, false discoveries controlled on null data."""

from __future__ import annotations

import numpy as np
import pytest

from runner.analysis import compare, compare_variants
from runner.analysis.synthetic import Law, synthetic_metrics
from runner.errors import DatasetError

THREADS = [1, 2, 4, 8, 16, 32]


def campaign(name: str, seed: int, factor: dict[str, float] | None = None, reps: int = 8, noise: float = 0.05,
             locks=("ticket", "mcs", "ttas", "mutex")):
    factor = factor or {}
    return synthetic_metrics(axes={"lock": list(locks), "threads": THREADS}, campaign=name, seed=seed, reps=reps,
                             noise=noise, per_thread=False,
                             law=lambda p: Law(0.05, 0.0005, 1e6 * factor.get(p["lock"], 1.0)))


def test_finds_regressions_and_improvements_first():
    a = campaign("a", 1)
    b = campaign("b", 2, {"ticket": 0.7, "mcs": 1.3})
    r = compare(a, b)
    assert len(r) == 4 * len(THREADS)
    top = r.head(12)
    assert set(top[top["lock"] == "ticket"]["verdict"]) == {"worse"}
    assert set(top[top["lock"] == "mcs"]["verdict"]) == {"better"}
    assert list(r["verdict"][:6]) == ["worse"] * 6
    reg = r[r["lock"] == "ticket"]
    assert np.allclose(reg["change"], -0.3, atol=0.08)
    assert (reg["change_low"] < reg["change"]).all() and (reg["change"] < reg["change_high"]).all()
    assert (r[r["lock"].isin(["ttas", "mutex"])]["verdict"] != "worse").all()


def test_false_discovery_rate_on_null_data():
    # 40 locks x 6 thread counts = 240 cells with no real difference, 25 repetitions per side
    locks = [f"l{i}" for i in range(40)]
    discoveries = 0
    for seed in range(3):
        r = compare(campaign("a", 10 + seed, locks=locks, reps=25), campaign("b", 20 + seed, locks=locks, reps=25))
        assert len(r) == 240
        discoveries += int((r["verdict"] != "not significant").sum())
        # uncorrected tests would flag about 5% of the cells
        assert 0.01 < (r["p"] < 0.05).mean() < 0.12
    # BH at q=0.05 under the global null: P(any discovery) <= 0.05 per comparison
    assert discoveries <= 2


def test_compare_variants_and_errors():
    m = campaign("a", 3, {"mcs": 1.5})
    r = compare_variants(m, "lock", "ticket", "mcs")
    assert set(r["verdict"]) == {"better"} and len(r) == len(THREADS)
    with pytest.raises(DatasetError, match="known: mcs, mutex, ticket, ttas"):
        compare_variants(m, "lock", "ticket", "oticket")
    with pytest.raises(DatasetError, match="no total rows of metric 'latency'"):
        compare(m, m, metric="latency")
    few = compare(campaign("a", 1, reps=1), campaign("b", 2, reps=1))
    assert set(few["verdict"]) == {"too few"}
