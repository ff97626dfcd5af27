"""The runner's own overhead per trial on this machine (issue 2). Goal: under 0.2 s.

A campaign of N short trials (command workload `sleep 0.05`, default N=40) on the local host through the
default LocalCluster. Two figures:
- in the worker: trial wall time minus workload wall time (median over the campaign): connecting,
  preparing, building the command and parsing its output;
- end to end: the campaign's trial span (first start to last end) divided by N, minus the median
  workload wall time: adds Dask dispatch and the controller's atomic Parquet writes, i.e. what a trial
  costs beyond its workload when trials run back to back on one host.
Cluster start-up and fact collection happen once per campaign and are shown separately, and so is launch to
first trial (campaign.launch called to the first trial's start; issue 13's goal: under 3 s): the local cluster
starts in the background while facts and holds are taken. The host's hold file is private to the bench
(runner_hold_path in a temporary inventory), so other campaigns on this machine's localhost never make it wait.
The same campaign is then launched once more by the command line, `runner launch` in a new process (its
Python start and imports, matrix and inventory included), to time the command to its first trial as well.
Run: .venv/bin/python bench/overhead_bench.py [N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Every local Dask worker imports this script again (multiprocessing's __mp_main__): the runner's heavy modules
# are left out there, or each worker would import them before its first trial (seconds on 2 cores).
if __name__ != "__mp_main__":
    from runner.execution import campaign
    from runner.matrix.load import load_matrix
    from runner.records.store import read_campaign


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yml"
        inventory = Path(tmp) / "hosts.yml"
        inventory.write_text(
            "all:\n  children:\n    local:\n      hosts:\n        localhost:\n          ansible_connection: local\n"
            f"          runner_hold_path: {tmp}/hold.json\n"
        )
        path.write_text(
            "campaign: overhead-bench\n"
            f"hosts: {{group: local, inventory: {inventory}}}\n"
            "workload:\n  name: command\n  params:\n    run: 'sleep 0.05; echo \"{\\\"n\\\": 1}\"'\n"
            f"axes:\n  i: {list(range(n))}\nrepetitions: 1\ntimeout: 30\n"
        )
        matrix = load_matrix(path)
        load0 = os.getloadavg()[0]
        t0, wall0 = time.monotonic(), time.time()
        summary = campaign.launch(matrix, datasets=Path(tmp) / "ds", hosts=campaign.resolve_hosts(matrix))
        elapsed = time.monotonic() - t0
        assert summary.success, summary.failures
        _, trials, _ = read_campaign(summary.dataset)
        cli_first, cli_load = launch_by_command(path, Path(tmp) / "ds-cli")
        relaunch_first, relaunch_load = relaunch_after_sigkill(Path(tmp), inventory)
    in_worker = statistics.median(trials["wall_s"] - trials["workload_wall_s"])
    workload = statistics.median(trials["workload_wall_s"])
    span = (trials["ended_at"].max() - trials["started_at"].min()).total_seconds()
    first = trials["started_at"].min().timestamp() - wall0
    end_to_end = span / n - workload
    print(f"{n} trials of `sleep 0.05` on localhost: campaign {elapsed:.2f} s, trials span {span:.2f} s")
    print(f"  workload wall (median)              : {workload * 1000:7.1f} ms")
    print(f"  overhead in the worker (median)     : {in_worker * 1000:7.1f} ms  (trial wall - workload wall)")
    print(f"  overhead end to end per trial       : {end_to_end * 1000:7.1f} ms  (span / N - workload; goal < 200 ms)")
    print(f"  once per campaign (cluster, facts)  : {elapsed - span:7.2f} s")
    print(f"  launch -> first trial               : {first:7.2f} s  (goal < 3 s)")
    print(f"  load average (1 min) before/after   : {load0:.1f} / {os.getloadavg()[0]:.1f}")
    print(f"  `runner launch` -> first trial      : {cli_first:7.2f} s  (a new process; load before/after {cli_load})")
    print(f"  relaunch after SIGKILL -> 1st trial : {relaunch_first:7.2f} s  (`runner launch` again after the controller was "
          f"SIGKILLed mid-campaign; goal < 5 s; load {relaunch_load})")


def launch_by_command(matrix: Path, datasets: Path) -> tuple[float, str]:
    """Seconds from starting `runner launch MATRIX` to its first trial's start, and the load around it."""
    runner = Path(sys.executable).with_name("runner")
    argv = [str(runner)] if runner.exists() else [sys.executable, "-m", "runner.cli"]
    load0 = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run([*argv, "launch", str(matrix), "--datasets", str(datasets), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, trials, _ = read_campaign(datasets / "overhead-bench")
    return trials["started_at"].min().timestamp() - t0, f"{load0:.1f} / {os.getloadavg()[0]:.1f}"


def relaunch_after_sigkill(tmp: Path, inventory: Path) -> tuple[float, str]:
    """`runner launch` of 8 trials of `sleep 1`, SIGKILLed (the controller process only, as a crash or the OOM
    killer would) once two trials are recorded; then `runner launch` again: seconds from its start to the
    start of its first trial (one the first launch did not record). Its hold on the host is the killed
    controller's: the relaunch must take it over at once, not wait for the hold to expire."""
    runner = Path(sys.executable).with_name("runner")
    argv = [str(runner)] if runner.exists() else [sys.executable, "-m", "runner.cli"]
    path = tmp / "relaunch.yml"
    path.write_text(
        "campaign: relaunch-bench\n"
        f"hosts: {{group: local, inventory: {inventory}}}\n"
        "workload:\n  name: command\n  params:\n    run: 'sleep 1; echo \"{\\\"n\\\": 1}\"'\n"
        f"axes:\n  i: {list(range(8))}\nrepetitions: 1\ntimeout: 30\n"
    )
    datasets = tmp / "ds-relaunch"
    command = [*argv, "launch", str(path), "--datasets", str(datasets), "--quiet"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials_dir = datasets / "relaunch-bench" / "trials"
    deadline = time.monotonic() + 120
    while len(list(trials_dir.glob("**/*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()
    first.wait()
    _, before, _ = read_campaign(datasets / "relaunch-bench")
    load0 = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, after, _ = read_campaign(datasets / "relaunch-bench")
    new = after[~after["trial_id"].isin(set(before.loc[before["status"] == "ok", "trial_id"]))]
    return new["started_at"].min().timestamp() - t0, f"{load0:.1f} / {os.getloadavg()[0]:.1f}"


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
