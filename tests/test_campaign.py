"""A real campaign on this machine: real Dask cluster, real lockbench, real Parquet, read back by DuckDB.

Covers resume after SIGKILL of the controller, Ctrl-C, two launches at once and a changed matrix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pytest

from runner.cli import main
from runner.errors import DatasetError
from runner.records.store import CampaignStore, read_campaign
from tests.events import as_a_terminal_starts_it, wait_for

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
RUNNER = [sys.executable, "-m", "runner.cli"]


def write_matrix(tmp: Path, name: str, *, reps: int = 2, duration: float = 0.1, extra: str = "") -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        f"workload: {{name: lockbench, params: {{duration: {duration}}}}}\n"
        "axes:\n  lock: [ttas, ticket]\n  threads: [1, '100%', '200%']\n"
        f"repetitions: {reps}\ntimeout: 30\n{extra}"
    )
    return path


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*RUNNER, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=as_a_terminal_starts_it,
    )


def ok_files(dataset: Path) -> list[Path]:
    return list((dataset / "trials").glob("workload=*/*.ok.parquet"))


def test_short_campaign_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = write_matrix(tmp_path, "e2e")
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "12 ok now, 0 failed" in out and str(tmp_path / "ds" / "e2e") in out

    metrics, trials, prov = read_campaign("e2e", tmp_path / "ds")
    assert len(trials) == 12 and set(trials["status"]) == {"ok"}
    assert trials["trial_id"].is_unique
    totals = metrics[(metrics["metric"] == "throughput") & metrics["thread"].isna()]
    assert len(totals) == 12 and (totals["value"] > 0).all()
    # per-thread rows sum to the total ops of their trial
    per_thread = metrics[metrics["metric"] == "thread_ops"].groupby("trial_id")["value"].sum()
    total_ops = metrics[metrics["metric"] == "total_ops"].set_index("trial_id")["value"]
    pd.testing.assert_series_equal(per_thread.sort_index(), total_ops.sort_index(), check_names=False)
    assert prov["matrix"] == matrix.read_text() and prov["hosts"]["localhost"]["cpus"] == os.cpu_count()
    assert prov["runner_version"] and prov["matrix_sha256"]

    # The same files through DuckDB, polars and a pyarrow dataset, pruned by workload.
    glob = str(tmp_path / "ds" / "*" / "metrics" / "**" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT lock, threads, count(*) AS n FROM read_parquet('{glob}', hive_partitioning=true) "
        "WHERE metric = 'throughput' AND workload = 'lockbench' GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    cpus = os.cpu_count()
    assert rows == sorted((lock, t, 2) for lock in ("ticket", "ttas") for t in sorted({1, cpus, 2 * cpus}))
    frame = pl.read_parquet(str(tmp_path / "ds" / "e2e" / "trials" / "**" / "*.parquet"), hive_partitioning=True)
    assert frame.height == 12 and set(frame["workload"]) == {"lockbench"}
    ds = pads.dataset(tmp_path / "ds" / "e2e" / "metrics", format="parquet", partitioning="hive")
    assert ds.to_table(filter=pads.field("workload") == "lockbench").num_rows == len(metrics)

    # Launching again resumes: nothing left to do, nothing recorded twice.
    assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 0
    assert "12 already recorded, 0 ok now" in capsys.readouterr().out
    assert len(ok_files(tmp_path / "ds" / "e2e")) == 12


def test_sigkill_controller_then_resume(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, "killed", reps=4, duration=0.3)  # 24 trials of ~0.4 s
    dataset = tmp_path / "datasets" / "killed"
    proc = start(["launch", str(matrix)], tmp_path)
    wait_for(lambda: len(ok_files(dataset)) >= 4, 60)
    os.killpg(proc.pid, signal.SIGKILL)  # the controller and its Dask workers, mid-campaign
    proc.communicate()
    first = {p.name.split(".")[0] for p in ok_files(dataset)}
    assert 4 <= len(first) < 24

    done = subprocess.run([*RUNNER, "launch", str(matrix)], cwd=tmp_path, capture_output=True, text=True, timeout=900)  # a bound against a hang, not a speed
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already recorded" in done.stdout
    metrics, trials, _ = read_campaign(dataset)
    ok = trials[trials["status"] == "ok"]
    assert len(ok) == 24 and ok["trial_id"].is_unique
    # no duplicate metric rows and no partial or staging file anywhere
    totals = metrics[metrics["metric"] == "throughput"]
    assert len(totals) == 24 and totals["trial_id"].is_unique
    assert not list(dataset.rglob(".*.tmp"))
    assert set(metrics["trial_id"]) <= set(ok["trial_id"])


def test_ctrl_c_keeps_results_and_stops_workloads(tmp_path: Path, campaigns: list[str]) -> None:
    name = f"interrupted-{uuid.uuid4().hex[:8]}"  # so the process checks below see this test's processes only
    campaigns.append(name)
    matrix = write_matrix(tmp_path, name, reps=3, duration=2.0)
    dataset = tmp_path / "datasets" / name
    ours = f"datasets/{name}|/{name}/localhost/lockbench"

    def running() -> str:
        return subprocess.run(["pgrep", "-f", ours], capture_output=True, text=True).stdout.strip()

    proc = start(["launch", str(matrix)], tmp_path)
    # a trial is recorded and the next one's lockbench runs (or the launch ended: said below)
    seen = wait_for(lambda: proc.poll() is not None or (ok_files(dataset) and running()), 120)
    if not seen or proc.poll() is not None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"never saw a trial recorded and the next one running: {proc.communicate()}")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    out, err = proc.communicate(timeout=900)  # a bound against a hang, not a speed
    assert proc.returncode == 130, err
    assert "interrupted" in out + err
    assert len(ok_files(dataset)) >= 1
    assert running() == "", "a workload outlived Ctrl-C"
    assert not (dataset / "lock").read_text().strip()  # the lock was released


def test_second_launch_refuses_while_first_runs(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, "twice", reps=2, duration=1.0)
    first = start(["launch", str(matrix)], tmp_path)
    try:
        wait_for(lambda: (tmp_path / "datasets" / "twice" / "dataset.json").exists(), 30)
        second = subprocess.run([*RUNNER, "launch", str(matrix)], cwd=tmp_path, capture_output=True, text=True, timeout=900)  # a bound against a hang
        assert second.returncode == 1
        assert second.stderr.startswith("runner: campaign 'twice' is already being run (pid ")
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()


def test_changed_matrix_is_refused(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "ds" / "c")
    with store:
        store.initialise(campaign="c", workload="lockbench", matrix_text="a", matrix_sha256="a" * 64, axis_types={},
                         trial_count=1, seed=0, provenance={})
        with pytest.raises(DatasetError, match="already exists .* with a different matrix"):
            store.initialise(campaign="c", workload="lockbench", matrix_text="b", matrix_sha256="b" * 64, axis_types={},
                             trial_count=1, seed=0, provenance={})


def test_failures_are_retried_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A command that fails on its first attempt and succeeds on the second, and one that always times out.
    marker = tmp_path / "seen"
    matrix = tmp_path / "flaky.yml"
    matrix.write_text(
        "campaign: flaky\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload:\n  name: command\n  params:\n"
        f"    run: 'if [ \"$RUNNER_MODE\" = slow ]; then sleep 30; fi; if [ -e {marker}.$RUNNER_MODE ]; then echo \"{{\\\"v\\\": 1}}\"; else touch {marker}.$RUNNER_MODE; exit 3; fi'\n"
        "axes:\n  mode: [flaky, slow]\n"
        "repetitions: 1\ntimeout: 1\nretry: {attempts: 2, on: [failed, timeout]}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "1 ok now, 1 failed (4 attempts)" in out
    _, trials, _ = read_campaign("flaky", tmp_path / "ds")
    by_mode = {m: g.sort_values("attempt") for m, g in trials.groupby("mode")}
    assert list(by_mode["flaky"]["status"]) == ["failed", "ok"]
    assert "exited with status 3" in by_mode["flaky"]["error"].iloc[0]
    assert list(by_mode["slow"]["status"]) == ["timeout", "timeout"]
    assert "past its timeout of 1 s" in by_mode["slow"]["error"].iloc[0]
    assert (by_mode["slow"]["workload_wall_s"] < 10).all()


def test_full_disk_stops_with_one_line_and_keeps_results(tmp_path: Path) -> None:
    # The dataset on a tiny tmpfs of its own: it fills up mid-campaign.
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(small)], check=True)
    try:
        matrix = tmp_path / "full.yml"
        matrix.write_text(
            "campaign: full\n"
            f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
            "workload: {name: command, params: {run: 'echo {\\\"v\\\": $RUNNER_N}'}}\n"
            f"axes: {{n: {list(range(200))}}}\nrepetitions: 1\ntimeout: 10\n"
        )
        done = subprocess.run([*RUNNER, "launch", str(matrix), "--datasets", str(small)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("runner: ")]
        assert len(errors) == 1 and "Traceback" not in done.stderr
        assert errors[0].startswith(f"runner: cannot write results to {small / 'full'}: No space left on device")
        assert "launch again to resume" in errors[0]
        metrics, trials, _ = read_campaign(small / "full")
        assert 0 < len(trials) < 200 and set(trials["status"]) == {"ok"}
        assert set(metrics["trial_id"]) == set(trials["trial_id"])
        assert not list(small.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
