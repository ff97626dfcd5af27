"""The runner's own overhead per trial on this machine (issue 2). Goal: under 0.2 s.

A campaign of N short trials (command workload `sleep 0.05`, default N=40) on the local host through the
default LocalCluster. Two figures:
- in the worker: trial wall time minus workload wall time (median over the campaign): connecting,
  preparing, building the command and parsing its output;
- end to end: the campaign's trial span (first start to last end) divided by N, minus the median
  workload wall time: adds Dask dispatch and the controller's atomic Parquet writes, i.e. what a trial
  costs beyond its workload when trials run back to back on one host.
Cluster start-up and fact collection happen once per campaign and are shown separately.
Run: .venv/bin/python bench/overhead_bench.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from runner.execution import campaign
from runner.matrix.load import load_matrix
from runner.records.store import read_campaign

PROJECT = Path(__file__).resolve().parents[1]


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yml"
        path.write_text(
            "campaign: overhead-bench\n"
            f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
            "workload:\n  name: command\n  params:\n    run: 'sleep 0.05; echo \"{\\\"n\\\": 1}\"'\n"
            f"axes:\n  i: {list(range(n))}\nrepetitions: 1\ntimeout: 30\n"
        )
        matrix = load_matrix(path)
        t0 = time.monotonic()
        summary = campaign.launch(matrix, datasets=Path(tmp) / "ds", hosts=campaign.resolve_hosts(matrix))
        elapsed = time.monotonic() - t0
        assert summary.success, summary.failures
        _, trials, _ = read_campaign(summary.dataset)
    in_worker = statistics.median(trials["wall_s"] - trials["workload_wall_s"])
    workload = statistics.median(trials["workload_wall_s"])
    span = (trials["ended_at"].max() - trials["started_at"].min()).total_seconds()
    end_to_end = span / n - workload
    print(f"{n} trials of `sleep 0.05` on localhost: campaign {elapsed:.2f} s, trials span {span:.2f} s")
    print(f"  workload wall (median)              : {workload * 1000:7.1f} ms")
    print(f"  overhead in the worker (median)     : {in_worker * 1000:7.1f} ms  (trial wall - workload wall)")
    print(f"  overhead end to end per trial       : {end_to_end * 1000:7.1f} ms  (span / N - workload; goal < 200 ms)")
    print(f"  once per campaign (cluster, facts)  : {elapsed - span:7.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
