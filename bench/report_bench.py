"""Time build_report on a synthetic dataset of about one million metric rows.

The data: 3 campaigns x 6 locks x 3 environments x 18 thread counts (1..128) x 5 repetitions; each trial has
5 metrics (throughput, acquisitions, latency p50/p99, spin time), each with a total and one row per thread, plus an
over-commit part (vms 1, 2, 4) per campaign: ~1.0 M rows.
Goal: under 10 s on a 2-core machine. Run: .venv/bin/python bench/report_bench.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from runner.analysis import build_report
from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials

THREADS = [1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 128]
# per-thread metrics besides throughput: (name, unit, higher_is_better, scale of the throughput value)
EXTRA = [("acquisitions", "ops", True, 10.0), ("latency_p50", "ns", False, None), ("latency_p99", "ns", False, None), ("spin_ns", "ns", False, None)]
LOCKS = {
    "ticket": Law(0.01, 0.0002, 1e6, collapse_at=32), "mcs": Law(0.02, 0.0001, 1e6), "ttas": Law(0.05, 0.0004, 1e6),
    "qspinlock": Law(0.015, 0.0001, 1e6), "oticket": Law(0.01, 0.00015, 1e6), "mutex": Law(0.1, 0.0, 8e5),
}


def dataset() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    parts = []
    for ci, campaign in enumerate(["c2026a", "c2026b", "c2026c"]):
        for ei, (env, accel) in enumerate([("host", "none"), ("container", "none"), ("kvm", "tcg")]):
            parts.append(synthetic_metrics(axes={"lock": list(LOCKS), "threads": THREADS}, law=lambda p: LOCKS[p["lock"]],
                                           campaign=campaign, env=env, accel=accel, reps=5, seed=10 * ci + ei))
        parts.append(synthetic_metrics(axes={"lock": list(LOCKS), "vms": [1, 2, 4], "threads": [16]}, per_thread=False,
                                       law=lambda p: LOCKS[p["lock"]], campaign=campaign, env="kvm", accel="tcg",
                                       overcommit_loss=0.15, seed=100 + ci).assign(cell_id=lambda d: "oc" + d["cell_id"]))
    base = pd.concat(parts, ignore_index=True)
    extra = []
    for name, unit, hib, scale in EXTRA:
        value = base["value"] * scale if scale else 1e9 / base["value"].clip(lower=1.0)
        extra.append(base.assign(metric=name, unit=unit, higher_is_better=hib, value=value))
    metrics = pd.concat([base, *extra], ignore_index=True)
    metrics["cell_id"] = metrics["cell_id"] + "-" + metrics["env"]
    metrics["trial_id"] = metrics["trial_id"] + "-" + metrics["env"]
    return metrics, synthetic_trials(metrics), synthetic_provenance("c2026a")


def main(out: Path) -> float:
    t0 = time.perf_counter()
    metrics, trials, prov = dataset()
    t1 = time.perf_counter()
    print(f"dataset: {len(metrics):,} metric rows, {len(trials):,} trials, generated in {t1 - t0:.1f} s")
    path = build_report(metrics, trials, prov, out)
    t2 = time.perf_counter()
    pngs = len(list((out / "img").glob("*.png")))
    print(f"build_report: {t2 - t1:.2f} s -> {path} ({pngs} figures, {path.stat().st_size / 1e3:.0f} kB HTML)")
    return t2 - t1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
