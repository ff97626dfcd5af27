"""Pack, verify, import and query times on a synthetic campaign of one million metric rows.

The dataset is written with pyarrow in the store's layout (runner.records.schema): TRIALS trial files
and as many metrics files of ROWS // TRIALS rows each (per-thread throughput values). Run:

    .venv/bin/python bench/dataset_bench.py [--rows 1000000] [--trials 200] [--dir /tmp/dsbench]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runner.records import share
from runner.records.schema import SCHEMA_VERSION, metrics_schema, trials_schema

AXES = {"lock": "str", "threads": "int"}
LOCKS = ["ttas", "ticket", "mcs", "mutex"]
HOSTS = ["numa80.lab.example", "numa120.lab.example"]


def make_dataset(root: Path, rows: int, trials: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    per = rows // trials
    (root / "hosts").mkdir(parents=True)
    for h in HOSTS:
        (root / "hosts" / f"{h}.json").write_text(json.dumps({"host": h, "cpus": 80, "address": "192.0.2.80"}))
    (root / "matrix.yml").write_text("campaign: bench\nworkload: {name: lockbench}\n")
    (root / "provenance.json").write_text(json.dumps({"campaign": "bench", "controller": "ctl.lab.example", "runner_version": "bench"}))
    (root / "dataset.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "campaign": "bench", "workload": "lockbench", "matrix_sha256": "0" * 64,
        "axis_types": AXES, "trials_planned": trials, "seed": seed, "created_at": datetime.now(UTC).isoformat(),
    }))
    now = datetime.now(UTC)
    for i in range(trials):
        tid = hashlib.sha256(str(i).encode()).hexdigest()[:16]
        lock, threads, host = LOCKS[i % 4], 1 + (i // 4) % 160, HOSTS[i % 2]
        common = {"campaign": "bench", "trial_id": tid, "cell_id": tid[:8], "repetition": 1, "attempt": 1, "host": host, "env": "host", "accel": "none", "lock": lock, "threads": threads}
        name = f"{tid}.a1.ok.parquet"
        metrics = pa.table({
            **{k: [v] * per for k, v in common.items()},
            "metric": ["throughput"] * per, "value": rng.lognormal(13, 1, per), "unit": ["ops/s"] * per,
            "higher_is_better": [True] * per, "thread": np.arange(per, dtype=np.int32) % threads, "vm": pa.nulls(per, pa.int32()),
        }).select(metrics_schema(AXES).names).cast(metrics_schema(AXES))
        trial = pa.Table.from_pylist([{**common, "status": "ok", "error": None, "started_at": now, "ended_at": now, "wall_s": 1.0, "workload_wall_s": 0.9, "params_json": json.dumps({"lock": lock, "threads": threads}), "guest_json": None}], schema=trials_schema(AXES))
        for table, t in (("metrics", metrics), ("trials", trial)):
            path = root / table / "workload=lockbench" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, path)


def timed(label: str, fn, results: dict) -> object:  # noqa: ANN001 - any callable
    start = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - start
    print(f"{label:28s} {results[label]:7.2f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="dsbench."))
    shutil.rmtree(work, ignore_errors=True)
    ds = work / "datasets"
    results: dict[str, float] = {}
    timed("write synthetic dataset", lambda: make_dataset(ds / "bench", args.rows, args.trials), results)
    size = sum(p.stat().st_size for p in (ds / "bench").rglob("*.parquet"))
    print(f"{args.rows} metric rows in {args.trials} trials, {size / 1e6:.1f} MB of Parquet")
    archive = timed("pack", lambda: share.pack("bench", work / "bench.tar.gz", datasets=ds), results)
    print(f"archive: {archive.stat().st_size / 1e6:.1f} MB")
    timed("pack --anonymize", lambda: share.pack("bench", work / "anon.tar.gz", datasets=ds, anonymize=True, key=b"k" * 32), results)
    timed("verify", lambda: share.verify(archive), results)
    timed("import (verify + write)", lambda: share.import_archive(archive, work / "imported"), results)
    sql = "SELECT lock, threads, median(value) AS m, count(*) AS n FROM metrics WHERE metric = 'throughput' GROUP BY ALL ORDER BY ALL"
    _, rows = timed("query: median per cell", lambda: share.query(sql, ds), results)
    assert sum(r[3] for r in rows) == args.trials * (args.rows // args.trials)
    timed("query: count(*)", lambda: share.query("SELECT count(*) FROM metrics", ds), results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
