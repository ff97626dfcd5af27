"""The controller's cost as hosts grow (issue 13, item 3), measured, not asserted. Needs root (`ip netns`).

One test bed of 64 SSH hosts; campaigns of 640 trials of `sleep D` (default D=0.2 s) over the first 8, 16,
32 and 64 hosts, with placement `pool` (640 trials shared) and `each` (640 / hosts trials per host, so
640 in all). For each: makespan (first trial start to last trial end) against the ideal 640 x D / hosts,
launch to first trial, the whole campaign wall time, the controller's CPU seconds per trial (this process:
user + system, from resource.getrusage), the Dask workers' CPU seconds per trial (the LocalCluster's
Python processes below this one, sampled every 0.2 s with psutil: they fork from a forkserver that outlives
each campaign, so RUSAGE_CHILDREN no longer sees them; what a worker spends after its last sample is
missed, and the forkserver's own start is counted in the first campaign), the controller's peak RSS so far
(ru_maxrss; campaigns run in order of growing host count, so the peak belongs to the largest so far), and
the 1-minute load average before and after (the machine has 2 cores and is shared).
Run: .venv/bin/python bench/scale_bench.py [TRIALS] [D] [HOSTS,...]   e.g. 640 0.2 8,16,32,64
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

# Every local Dask worker imports this script again (multiprocessing's __mp_main__): the runner's heavy modules
# are left out there, or each worker would import them before its first trial (seconds on 2 cores).
if __name__ != "__mp_main__":
    from runner.execution import campaign
    from runner.matrix.load import load_matrix
    from runner.records.store import read_campaign
    from runner.testing.testbed import TestBed

WORK = Path("/var/tmp/runner")


def write_inventory(bed: TestBed, path: Path, sizes: list[int]) -> Path:
    doc = yaml.safe_load(bed.inventory_path.read_text())
    names = list(doc["all"]["children"]["testbed"]["hosts"])
    for k in sizes:
        doc["all"]["children"][f"s{k}"] = {"hosts": dict.fromkeys(names[:k])}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class WorkerCPU:
    """CPU seconds of the Python processes below this one (the Dask workers and their forkserver; not the test
    bed's sshds and shells), sampled every `every` seconds in a thread while `with`."""

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        for p in psutil.Process().children(recursive=True):
            try:
                if "python" in p.name():
                    t = p.cpu_times()
                    self.seen[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        return sum(self.seen.values())

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> WorkerCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one(tmp: Path, inventory: Path, hosts: int, placement: str, trials: int, seconds: float, workers: WorkerCPU) -> str:
    name = f"scale-{placement}-{hosts}-{os.getpid()}"
    n = trials if placement == "pool" else trials // hosts
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: s{hosts}, inventory: {inventory}, placement: {placement}}}\n"
        f"workload:\n  name: command\n  params:\n    run: 'sleep {seconds:g}; echo \"{{\\\"n\\\": 1}}\"'\n"
        f"axes:\n  i: {list(range(n))}\nrepetitions: 1\ntimeout: 120\n"
    )
    matrix = load_matrix(path)
    load0 = os.getloadavg()[0]
    self0, kids0 = cpu(resource.RUSAGE_SELF), workers.sample()
    t0, m0 = time.time(), time.monotonic()
    try:
        summary = campaign.launch(matrix, datasets=tmp / "ds", hosts=campaign.resolve_hosts(matrix))
    finally:
        subprocess.run(["rm", "-rf", str(WORK / name)], check=False)
    wall = time.monotonic() - m0
    self_cpu, kids_cpu = cpu(resource.RUSAGE_SELF) - self0, workers.sample() - kids0
    _, rows, _ = read_campaign(summary.dataset)
    done = len(rows)
    span = (rows["ended_at"].max() - rows["started_at"].min()).total_seconds()
    first = rows["started_at"].min().timestamp() - t0
    ideal = done * seconds / hosts
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = "" if summary.success else f"  ({summary.failed} failed: {summary.failures[:1]})"
    return (f"  {hosts:>5}  {placement:<4}  {done:>6}  {span:8.2f}s  {ideal:6.2f}s  {ideal / span:5.3f}  {first:7.2f}s  "
            f"{wall:8.2f}s  {self_cpu / done * 1000:9.1f}  {kids_cpu / done * 1000:9.1f}  {rss:8.0f}  "
            f"{load0:4.1f}/{os.getloadavg()[0]:4.1f}{ok}")


def main(trials: int, seconds: float, sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.monotonic()
        with TestBed.up(max(sizes), tmp, "bed") as bed:
            print(f"test bed of {max(sizes)} hosts up in {time.monotonic() - t0:.1f} s", flush=True)
            inventory = write_inventory(bed, tmp / "scale-hosts.yml", sizes)
            print(f"{trials} trials of `sleep {seconds:g}`; ideal = trials x D / hosts; CPU columns in ms per trial")
            print("  hosts  plac  trials  makespan   ideal    eff  launch->1st  campaign  ctrl CPU  worker CPU  peak MB  load", flush=True)
            with WorkerCPU() as workers:
                for hosts in sizes:
                    for placement in ("pool", "each"):
                        print(one(tmp, inventory, hosts, placement, trials, seconds, workers), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 640, float(sys.argv[2]) if len(sys.argv) > 2 else 0.2,
         [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else [8, 16, 32, 64])
