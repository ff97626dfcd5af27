"""Fan-out over SSH on the namespace test bed (issue 3), measured, not asserted. Needs root (`ip netns`).

1. Fan-out efficiency against the true ideal (issue 13): campaigns of T equal trials (command workload
   `sleep D`, D = 1 s and 0.2 s, default T=32) on 4 test-bed hosts (placement pool). Efficiency = ideal /
   makespan, ideal = T x D / hosts (nothing but the workloads), makespan = first trial start to last trial
   end. Side by side in one run: the runner as it is; the runner without standby SSH sessions
   (RUNNER_SSH_STANDBY=0: a new session, so a new login shell, per trial: the old per-trial path); and a
   plain loop (one paramiko connection per host, one thread per host running `sleep D` T/hosts times):
   what SSH alone costs. Goals: >= 0.95 with 1 s trials, >= 0.9 with 0.2 s trials. Also launch to first
   trial (campaign start to the first trial's start) and the whole campaign wall time. Then, per variant,
   where a trial's time beyond D goes (medians, ms): `exec` = the workload command's wall time minus D
   (the remote command: session or standby, shells, `timeout`, the workload's own processes); `worker` =
   the trial's wall time minus the command's (the worker: host cache, hold guard, context, parsing);
   `gap` = from a trial's end to the start of the next trial on the same host (result to the controller,
   record hand-off, next submit, Dask to the worker); `late` = how long after the first trial each host
   started its first (connect, CPU count, work directory); `tail` = the last trial's end on the
   busiest-ending host minus the median host's last end (uneven shares in pool placement). And the CPU
   each variant used per trial (the whole campaign, launch included, divided by T): the runner's processes
   (controller, Dask scheduler and workers), the test-bed hosts' (sshd and everything it ran), and how many
   of the machine's cores were busy during the makespan: the test-bed hosts share this machine's cores with
   the runner, so on 2 cores short trials find the cores busy (see docs/hosts.md).
2. Per-trial overhead over SSH, side by side with Ansible: N trials of `true` on one host, run back to
   back by the runner (span / N), against N runs of `ansible tb1 -m ansible.builtin.command -a true`
   with the project's ansible.cfg (pipelining, ControlPersist: Ansible at its fastest). Goal: the
   runner's per-trial cost at least 5x lower.
Run: .venv/bin/python bench/fanout_bench.py [T] [N] [--old]   (N=0: skip the Ansible comparison)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

# Every local Dask worker imports this script again (multiprocessing's __mp_main__): the runner's heavy modules
# are left out there, or each worker would import them before its first trial (seconds on 2 cores).
if __name__ != "__mp_main__":
    from runner.execution import campaign
    from runner.matrix.load import load_matrix
    from runner.records.store import read_campaign
    from runner.testing.testbed import TestBed

PROJECT = Path(__file__).resolve().parents[1]
WORK = Path("/var/tmp/runner")


def write_inventory(bed: TestBed, path: Path) -> Path:
    """The test bed's inventory plus groups fan1, fan2, fan4 (the first 1, 2, 4 hosts)."""
    doc = yaml.safe_load(bed.inventory_path.read_text())
    hosts = doc["all"]["children"]["testbed"]["hosts"]
    names = list(hosts)
    for k in (1, 2, 4):
        doc["all"]["children"][f"fan{k}"] = {"hosts": {n: None for n in names[:k]}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(tmp: Path, name: str, inventory: Path, group: str, command: str, n: int) -> tuple[float, object]:
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: {group}, inventory: {inventory}}}\n"
        f"workload:\n  name: command\n  params:\n    run: '{command}; echo \"{{\\\"n\\\": 1}}\"'\n"
        f"axes:\n  i: {list(range(n))}\nrepetitions: 1\ntimeout: 60\n"
    )
    matrix = load_matrix(path)
    t0 = time.monotonic()
    try:
        summary = campaign.launch(matrix, datasets=tmp / "ds", hosts=campaign.resolve_hosts(matrix))
    finally:
        subprocess.run(["rm", "-rf", str(WORK / name)], check=False)
    elapsed = time.monotonic() - t0
    assert summary.success, summary.failures
    _, trials, _ = read_campaign(summary.dataset)
    return elapsed, trials


def fanout(tmp: Path, inventory: Path, t: int) -> None:
    print(f"fan-out: {t} trials of `sleep 1` (placement pool); makespan = first trial start to last trial end")
    print("  ideal A = sum of the trials' wall times / hosts (what fan-out alone can reach)")
    print("  ideal B = sum of the workloads' own wall times / hosts (without per-trial and per-host setup)")
    print("  hosts  makespan  ideal A  eff A  ideal B  eff B  campaign wall  trials per host")
    for k in (1, 2, 4):
        elapsed, trials = run(tmp, f"fanout{k}-{os.getpid()}", inventory, f"fan{k}", "sleep 1", t)
        span = (trials["ended_at"].max() - trials["started_at"].min()).total_seconds()
        ideal_a = trials["wall_s"].sum() / k
        ideal_b = trials["workload_wall_s"].sum() / k
        per_host = "/".join(str(v) for v in trials["host"].value_counts().sort_index())
        print(f"  {k:>5}  {span:7.2f}s  {ideal_a:6.2f}s  {ideal_a / span:5.3f}  {ideal_b:6.2f}s  {ideal_b / span:5.3f}  {elapsed:12.2f}s  {per_host}")


class CpuMeter:
    """CPU used while a campaign runs. Per trial (the whole campaign, launch and facts included, over T; psutil,
    a process that ended counted in its parent's children times once reaped): the runner (this process and its
    descendants: Dask scheduler, workers, their forkserver; not the test bed) and the test-bed hosts (each
    host's sshd and what it ran: sessions, shells, workloads). And the machine's cores busy during the makespan
    only (/proc/stat sampled every 50 ms by a thread; everything on the machine), which shows whether short
    trials found the cores busy."""

    def __init__(self, bed: TestBed) -> None:
        import psutil

        self.psutil = psutil
        self.sshd = {h.sshd_pid for h in bed.hosts if h.sshd_pid}
        self.samples: list[tuple[float, float]] = []  # (time.time(), busy CPU seconds of the machine so far)
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True, name="cpu-sampler").start()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((time.time(), self._busy()))

    def _cpu(self, proc: object) -> float:
        t = proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def _trees(self) -> tuple[float, float]:
        runner = hosts = 0.0
        root = self.psutil.Process(os.getpid())
        for proc in [root, *root.children(recursive=True)]:
            try:
                if proc.pid in self.sshd:
                    hosts += self._cpu(proc) + sum(self._cpu(c) for c in proc.children(recursive=True))
                elif not any(p.pid in self.sshd for p in proc.parents()):
                    runner += self._cpu(proc)
            except self.psutil.NoSuchProcess:
                pass
        return runner, hosts

    def sample(self) -> tuple[float, float]:
        return self._trees()

    def per_trial(self, before: tuple[float, float], after: tuple[float, float], n: int) -> str:
        runner, hosts = ((b - a) * 1000 / n for a, b in zip(before, after, strict=True))
        return f"cpu/trial: runner {runner:.0f} ms, test-bed hosts {hosts:.0f} ms"

    def cores_busy(self, start: float, end: float) -> float:
        """Mean cores busy on the machine between two time.time() instants (interpolated between samples)."""
        import numpy as np

        ts, busy = np.array([t for t, _ in self.samples]), np.array([b for _, b in self.samples])
        return float((np.interp(end, ts, busy) - np.interp(start, ts, busy)) / (end - start))


def breakdown(trials: object, seconds: float) -> str:
    """Where a trial's time beyond `seconds` goes, medians in ms (see the module doc): exec, worker, gap, late, tail."""
    t = trials.sort_values("started_at")
    exec_ms = statistics.median(t["workload_wall_s"] - seconds) * 1000
    worker_ms = statistics.median(t["wall_s"] - t["workload_wall_s"]) * 1000
    gaps, firsts, lasts = [], [], []
    for _, per in t.groupby("host"):
        start, end = per["started_at"].tolist(), per["ended_at"].tolist()
        gaps += [(b - a).total_seconds() for a, b in zip(end[:-1], start[1:], strict=True)]
        firsts.append(start[0])
        lasts.append(end[-1])
    gap_ms = statistics.median(gaps) * 1000 if gaps else float("nan")
    late_ms = statistics.median([(f - min(firsts)).total_seconds() for f in firsts]) * 1000
    tail_ms = (max(lasts) - sorted(lasts)[len(lasts) // 2]).total_seconds() * 1000
    return f"exec {exec_ms:.0f}  worker {worker_ms:.0f}  gap {gap_ms:.0f}  late {late_ms:.0f}  tail {tail_ms:.0f}"


def run_plain(bed: TestBed, hosts: int, seconds: float, t: int) -> float:
    """The plain-SSH alternative: one connection per host, the host's share of trials back to back; makespan."""
    from concurrent.futures import ThreadPoolExecutor

    from runner.hosts.ssh import HostSpec, SSHHost

    specs = [HostSpec(h.name, h.address, h.port, "root", bed.key_path, bed.known_hosts) for h in bed.hosts[:hosts]]
    conns = [SSHHost(s) for s in specs]
    old = os.environ.get("RUNNER_SSH_STANDBY")
    try:
        for c in conns:
            c.use_standby = False
            c.run(["true"], timeout=30)  # connected before the clock starts, like the runner's workers
        share = [t // hosts + (1 if i < t % hosts else 0) for i in range(hosts)]

        def loop(i: int) -> None:
            for _ in range(share[i]):
                assert conns[i].run(["sleep", f"{seconds:g}"], timeout=60).ok

        t0 = time.monotonic()
        with ThreadPoolExecutor(hosts) as pool:
            list(pool.map(loop, range(hosts)))
        return time.monotonic() - t0
    finally:
        for c in conns:
            c.close()
        if old is not None:
            os.environ["RUNNER_SSH_STANDBY"] = old


def fanout_true(tmp: Path, bed: TestBed, inventory: Path, t: int, hosts: int = 4) -> None:
    print(f"fan-out against the true ideal: {t} trials of `sleep D` on {hosts} test-bed hosts (placement pool);")
    print("  ideal = trials x D / hosts; makespan = first trial start to last trial end; load = 1-min load average before/after")
    print("  D     variant                          makespan   ideal  efficiency  launch->1st trial  campaign wall  load")
    lines = []
    meter = CpuMeter(bed)
    for seconds in (1.0, 0.2):
        ideal = t * seconds / hosts
        for variant, standby in (("runner", "1"), ("runner, no standby session", "0")):
            load0 = os.getloadavg()[0]
            os.environ["RUNNER_SSH_STANDBY"] = standby
            try:
                name = f"fanout-{seconds:g}-{standby}-{os.getpid()}".replace(".", "p")
                t0 = time.time()
                cpu0 = meter.sample()
                elapsed, trials = run(tmp, name, inventory, f"fan{hosts}", f"sleep {seconds:g}", t)
                cpu1 = meter.sample()
            finally:
                os.environ.pop("RUNNER_SSH_STANDBY", None)
            span = (trials["ended_at"].max() - trials["started_at"].min()).total_seconds()
            first = trials["started_at"].min().timestamp() - t0
            print(f"  {seconds:<4g}  {variant:<31}  {span:7.2f}s  {ideal:5.2f}s  {ideal / span:10.3f}  {first:16.2f}s"
                  f"  {elapsed:12.2f}s  {load0:.1f}/{os.getloadavg()[0]:.1f}", flush=True)
            busy = meter.cores_busy(trials["started_at"].min().timestamp(), trials["ended_at"].max().timestamp())
            lines.append(f"  {seconds:<4g}  {variant:<31}  {breakdown(trials, seconds)}  {meter.per_trial(cpu0, cpu1, t)}; "
                         f"cores busy in the makespan {busy:.2f} of {os.cpu_count()}")
        load0 = os.getloadavg()[0]
        cpu0 = meter.sample()
        span = run_plain(bed, hosts, seconds, t)
        lines.append(f"  {seconds:<4g}  {'plain SSH loop (paramiko)':<31}  {meter.per_trial(cpu0, meter.sample(), t)}; "
                     f"cores busy in the makespan {meter.cores_busy(time.time() - span, time.time()):.2f} of {os.cpu_count()}")
        print(f"  {seconds:<4g}  {'plain SSH loop (paramiko)':<31}  {span:7.2f}s  {ideal:5.2f}s  {ideal / span:10.3f}  "
              f"{'-':>16}   {'-':>12}   {load0:.1f}/{os.getloadavg()[0]:.1f}", flush=True)
    print("  per trial beyond D (medians, ms; see the module doc):")
    print("\n".join(lines))


def overhead(tmp: Path, inventory: Path, n: int) -> None:
    elapsed, trials = run(tmp, f"sshoverhead-{os.getpid()}", inventory, "fan1", "true", n)
    span = (trials["ended_at"].max() - trials["started_at"].min()).total_seconds()
    runner_cost = span / n
    in_worker = statistics.median(trials["wall_s"] - trials["workload_wall_s"])
    ssh_exec = statistics.median(trials["workload_wall_s"])
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    argv = ["ansible", "tb1", "-i", str(inventory), "-m", "ansible.builtin.command", "-a", "true", "-o"]
    walls = []
    for _ in range(max(3, n // 4)):
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=PROJECT)
        walls.append(time.monotonic() - t0)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ansible_cost = statistics.median(walls)
    print(f"per-trial overhead over SSH, `true` on one test-bed host ({n} runner trials, {len(walls)} ansible runs):")
    print(f"  runner : {runner_cost * 1000:7.1f} ms per trial back to back (span / N); of which remote exec "
          f"{ssh_exec * 1000:.1f} ms, worker bookkeeping {in_worker * 1000:.1f} ms (medians)")
    print(f"  ansible: {ansible_cost * 1000:7.1f} ms per `ansible tb1 -m command -a true` (median; min {min(walls) * 1000:.0f} ms)")
    print(f"  ratio  : ansible / runner = {ansible_cost / runner_cost:.1f}x (goal >= 5x)")


def main(t: int, n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with TestBed.up(4, tmp, "bed") as bed:
            inventory = write_inventory(bed, tmp / "fanout-hosts.yml")
            if "--old" in sys.argv:  # the issue-3 figures (ideal from the trials' own wall times)
                fanout(tmp, inventory, t)
            fanout_true(tmp, bed, inventory, t)
            if n:
                overhead(tmp, inventory, n)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 32, int(args[1]) if len(args) > 1 else 40)
