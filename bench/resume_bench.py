"""What checking the recorded files costs a relaunch (and `runner status`), per file.

A relaunch trusts a recorded trial only after reading every page of its files (runner.records.reading:
CampaignReader.damaged; docs/faults.md): a footer alone misses a damaged page behind a sound footer. The
campaign is written through the real store (CampaignStore.write_attempt): TRIALS trials of lockbench-like
metrics (a total, one row per thread for 1-16 threads, a wall time), two files each. Timed, best of
--repeat (wall and this process's CPU time), each with a fresh reader (nothing cached):

- relaunch check, now: every page of every file (ParquetFile from the file's bytes, on this thread);
- relaunch check, before: the same with pq.read_table per file (what the check used until it was changed);
- footers only: schema, row count and trial_id statistics (what status and report checked first; not
  enough: a damaged page behind a sound footer passes, tests/test_trust_records.py `garbled_page`);
- `runner status` (campaign_status): the whole check, then the trials table;
- the relaunch's opening of the dataset (CampaignStore.initialise on the existing dataset, lock held).

    .venv/bin/python bench/resume_bench.py [--trials 2000] [--repeat 3] [--dir /tmp/resumebench]

For the figures of an older runner, run this script with PYTHONPATH at a checkout of it (`git archive REV
runner | tar -x -C DIR`): its "before" row is then its own check.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runner.cli.status import campaign_status
from runner.records import reading
from runner.records.metric import Metric
from runner.records.store import AttemptRecord, CampaignReader, CampaignStore

AXES = {"lock": "str", "threads": "int"}
MATRIX = "campaign: resume\nworkload: {name: lockbench}\n"


def make_dataset(root: Path, trials: int) -> None:
    store = CampaignStore(root)
    with store:
        store.initialise(campaign="resume", workload="lockbench", matrix_text=MATRIX, matrix_sha256="0" * 64,
                         axis_types=AXES, trial_count=trials, seed=1, provenance={"controller": "bench"})
        for i in range(trials):
            tid = hashlib.sha256(str(i).encode()).hexdigest()[:16]
            threads = 1 + i % 16
            metrics = (Metric("throughput", 1e6 + i, "ops/s", higher_is_better=True),
                       *(Metric("throughput", 1e5 + t, "ops/s", thread=t) for t in range(threads)),
                       Metric("wall_s", 1.0, "s", higher_is_better=False))
            store.write_attempt("resume", "lockbench", AXES, AttemptRecord(
                trial_id=tid, cell_id=tid[:8], repetition=1, attempt=1, host="h1", status="ok", error=None,
                started_at=1.0, ended_at=2.0, wall_s=1.0, workload_wall_s=1.0,
                params={"lock": ("ttas", "ticket", "mcs", "mutex")[i % 4], "threads": threads}, metrics=metrics))


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of `repeat` runs: on a loaded machine the CPU
    time is the steadier figure."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def whole_check_before(root: Path) -> object:
    """The relaunch check with the read it used before: pq.read_table per file (with PYTHONPATH at a checkout
    from before the change, which has no read_whole, the same as "now")."""
    fast = getattr(reading, "read_whole", None)
    if fast is None:
        return CampaignReader(root).damaged()
    reading.read_whole = pq.read_table  # type: ignore[assignment]
    try:
        return CampaignReader(root).damaged()
    finally:
        reading.read_whole = fast


def footers(files: list[Path]) -> None:
    """What a footer-only check would read: each file's schema, row count and trial_id statistics."""
    for path in files:
        pf = pq.ParquetFile(pa.BufferReader(path.read_bytes()))
        i = pf.schema_arrow.get_field_index("trial_id")
        for g in range(pf.metadata.num_row_groups):
            pf.metadata.row_group(g).column(i).statistics  # noqa: B018 - read, as a check would


def reopen(root: Path) -> None:
    store = CampaignStore(root)
    with store:
        store.initialise(campaign="resume", workload="lockbench", matrix_text=MATRIX, matrix_sha256="0" * 64,
                         axis_types=AXES, trial_count=0, seed=1, provenance={"controller": "bench"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="resumebench."))
    shutil.rmtree(work, ignore_errors=True)
    root = work / "datasets" / "resume"
    start = time.perf_counter()
    make_dataset(root, args.trials)
    files = sorted(root.rglob("*.parquet"))
    size = sum(p.stat().st_size for p in files)
    print(f"{args.trials} trials, {len(files)} files, {size / 1e6:.1f} MB of Parquet, written in "
          f"{time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    assert CampaignReader(root).damaged() == [] and whole_check_before(root) == []
    rows = [
        ("relaunch check, now (every page)", lambda: CampaignReader(root).damaged()),
        ("relaunch check, before (read_table)", lambda: whole_check_before(root)),
        ("footers only (not enough)", lambda: footers(files)),
        ("runner status", lambda: campaign_status(str(root), root.parent)),
        ("relaunch opening (initialise)", lambda: reopen(root)),
    ]
    print(f"{'':38s} {'files':>6s} {'seconds':>8s} {'ms/file':>8s} {'CPU s':>8s} {'CPU ms/file':>12s}")
    for label, fn in rows:
        wall, cpu = best_of(args.repeat, fn)
        n = len(files)
        print(f"{label:38s} {n:6d} {wall:8.2f} {wall / n * 1e3:8.3f} {cpu:8.2f} {cpu / n * 1e3:12.3f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
