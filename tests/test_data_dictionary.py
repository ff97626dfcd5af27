"""Self-describing data (issue 23 item 4): every dataset carries its data dictionary, in its Parquet files (field
metadata, and key-value metadata any reader lists: DuckDB here) and as schema.json / DATA-CARD.md; `role` says
`trial` for a trial of the matrix; datasets of older schema versions still load."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from runner.analysis import cell_stats
from runner.records.schema import DICTIONARY, METRIC_FIELDS, SCHEMA_VERSION, TRIAL_FIELDS, ordinary_role
from runner.records.store import AttemptRecord, CampaignStore, read_campaign
from runner.records.metric import Metric

AXES = {"lock": "str", "threads": "int"}


def _dataset(root: Path) -> CampaignStore:
    store = CampaignStore(root)
    store.initialise(campaign="described", workload="lockbench", matrix_text="campaign: described\n",
                     matrix_sha256="0" * 64, axis_types=AXES, trial_count=1, seed=0, provenance={})
    now = time.time()
    rec = AttemptRecord(trial_id="t1", cell_id="c1", repetition=1, attempt=1, host="h", status="ok", error=None,
                        started_at=now, ended_at=now + 1, wall_s=1.0, workload_wall_s=0.9, params={"lock": "ticket", "threads": 2},
                        metrics=(Metric("throughput", 100.0, "ops/s", True), Metric("throughput", 50.0, "ops/s", True, thread=0),
                                 Metric("stopped_early", 0.0, "bool", None)))
    store.write_attempt("described", "lockbench", AXES, rec)
    return store


def test_duckdb_lists_the_column_descriptions_of_a_new_dataset(tmp_path: Path) -> None:
    _dataset(tmp_path / "described")
    files = sorted(str(p) for p in (tmp_path / "described").glob("*/workload=lockbench/*.parquet"))
    assert len(files) == 2
    con = duckdb.connect()
    for path in files:
        rows = con.execute("SELECT decode(key), decode(value) FROM parquet_kv_metadata(?) "
                           "WHERE starts_with(decode(key), 'description:')", [path]).fetchall()
        described = {k.removeprefix("description:"): v for k, v in rows}
        columns = [r[0] for r in con.execute("SELECT name FROM parquet_schema(?) WHERE num_children IS NULL", [path]).fetchall()]
        assert set(columns) <= set(described), f"{path}: columns without a description: {set(columns) - set(described)}"
        assert "lock" in described and "matrix axis `lock`" in described["lock"]
    metrics_file = next(f for f in files if "/metrics/" in f)
    described = dict(con.execute("SELECT decode(key), decode(value) FROM parquet_kv_metadata(?)", [metrics_file]).fetchall())
    assert "Not the thread count: that is the axis `threads`" in described["description:thread"]
    assert described["description:role"].startswith("trial for a repetition of the cell")
    assert described["runner_schema_version"] == str(SCHEMA_VERSION)


def test_pyarrow_shows_the_field_descriptions(tmp_path: Path) -> None:
    _dataset(tmp_path / "described")
    path = next((tmp_path / "described" / "metrics").glob("workload=lockbench/*.parquet"))
    schema = pq.read_schema(path)
    for f in schema:
        assert f.metadata and f.metadata[b"description"].decode(), f.name
    assert schema.field("value").metadata[b"description"].decode() == DICTIONARY["value"]
    assert "1 is true and 0 false" in DICTIONARY["value"]


def test_schema_json_and_data_card_beside_the_tables(tmp_path: Path) -> None:
    _dataset(tmp_path / "described")
    doc = json.loads((tmp_path / "described" / "schema.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION
    names = {t: [c["name"] for c in cols] for t, cols in doc["tables"].items()}
    assert names["metrics"][:len(METRIC_FIELDS)] == [f.name for f in METRIC_FIELDS]
    assert names["trials"][:len(TRIAL_FIELDS)] == [f.name for f in TRIAL_FIELDS]
    assert {"workload", "lock", "threads"} <= set(names["metrics"])
    wall = next(c for c in doc["tables"]["trials"] if c["name"] == "wall_s")
    assert wall["unit"] == "s" and wall["direction"] == "lower is better"
    card = (tmp_path / "described" / "DATA-CARD.md").read_text()
    assert "| `thread` | int32 |" in card and "| `threads` | int |" in card and "`role`" in card
    assert "role = 'trial'" in card  # the query it shows keeps canary runs out


def test_role_is_trial_and_queries_can_say_so(tmp_path: Path) -> None:
    _dataset(tmp_path / "described")
    con = duckdb.connect()
    glob = str(tmp_path / "described" / "metrics" / "**" / "*.parquet")
    roles = con.execute("SELECT DISTINCT role FROM read_parquet(?, hive_partitioning=true)", [glob]).fetchall()
    assert roles == [("trial",)]
    total = con.execute("SELECT value FROM read_parquet(?, hive_partitioning=true) WHERE metric = 'throughput' AND "
                        "thread IS NULL AND vm IS NULL AND role = 'trial'", [glob]).fetchall()
    assert total == [(100.0,)]
    metrics, trials, _ = read_campaign(tmp_path / "described")
    assert set(trials["role"]) == {"trial"} and ordinary_role(metrics["role"]).all()
    # a frame read by another tool, straight from the files, gives the same statistics
    raw = con.execute("SELECT * FROM read_parquet(?, hive_partitioning=true)", [glob]).df()
    assert cell_stats(raw)["n"].tolist() == cell_stats(metrics)["n"].tolist() == [1, 1]


def test_a_version_5_dataset_still_loads(tmp_path: Path) -> None:
    """The format before version 6: role null for trials of the matrix, no descriptions, no schema.json."""
    root = tmp_path / "old"
    for table in ("metrics", "trials"):
        (root / table / "workload=lockbench").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"schema_version": 5, "campaign": "old", "workload": "lockbench",
                                                    "matrix_sha256": "0" * 64, "axis_types": AXES}))
    (root / "matrix.yml").write_text("campaign: old\n")
    t = pd.Timestamp("2026-01-01", tz="UTC")
    ident = {"campaign": ["old", "old"], "trial_id": ["t", "k"], "cell_id": ["c", "c"],
             "repetition": pa.array([1, 1], pa.int32()), "attempt": pa.array([1, 1], pa.int32()), "host": ["h", "h"],
             "env": ["host", "host"], "accel": ["none", "none"], "role": pa.array([None, "canary"], pa.string()),
             "lock": ["ticket", "ticket"], "threads": pa.array([2, 2], pa.int64())}
    trials_v5 = pa.table({**ident, "status": ["ok", "ok"], "started_at": pa.array([t, t], pa.timestamp("us", tz="UTC")),
                          "ended_at": pa.array([t, t], pa.timestamp("us", tz="UTC")), "wall_s": [1.0, 1.0],
                          "params_json": ["{}", "{}"]})
    metrics_v5 = pa.table({**ident, "metric": ["throughput", "throughput"], "value": [100.0, 90.0],
                           "unit": ["ops/s", "ops/s"], "higher_is_better": [True, True]})
    for i, trial in enumerate(ident["trial_id"]):  # one file per attempt, as the runner writes them
        pq.write_table(trials_v5.slice(i, 1), root / "trials" / "workload=lockbench" / f"{trial}.a1.ok.parquet")
        pq.write_table(metrics_v5.slice(i, 1), root / "metrics" / "workload=lockbench" / f"{trial}.a1.ok.parquet")
    metrics, trials, prov = read_campaign(root)
    assert prov["schema_version"] == 5
    assert list(trials.sort_values("trial_id")["role"]) == ["canary", "trial"]  # null read as trial (schema.upgrade)
    st = cell_stats(metrics)
    assert st["n"].tolist() == [1] and st["median"].tolist() == [100.0]  # the canary run stays out
