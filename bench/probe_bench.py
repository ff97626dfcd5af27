"""What each probe costs (issue 15): a short lockbench trial on this machine, without probes and with each
probe alone and all together, side by side.

The trials run through the worker's own path for a bare-host trial (runner.execution.environments.
run_on_host on the local host: prepare, probes started, workload, probes stopped, parse), interleaved
(repetition 1 of every configuration, then 2, ...) so a drift of the machine hits every configuration alike.
Two figures per configuration, medians over the repetitions:
- throughput of lockbench (`lock`, default ttas; threads = CPUs, `duration` s) and its change against no
  probes: what
  the probe takes from the workload while it runs (samplers and counters share the CPUs);
- probe CPU: the CPU seconds of the trial's child processes (workload, probe commands and samplers) minus
  those of a trial without probes: what the probe itself burns, robust where throughput is too noisy to
  show it (ttas threads spin: the workload's own CPU time is threads x duration, whatever the probes do);
- time added to a trial: trial wall time (start of the probes to their last reading) minus the workload's
  own wall time: what the probe adds to the campaign's duration.
A probe unavailable here (no perf, no CONFIG_LOCK_STAT, no KVM debugfs) is shown as such: its cost here is
only its availability check, made once per host.
Run: .venv/bin/python bench/probe_bench.py [repetitions] [duration] [lock]
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time

from runner.execution import environments
from runner.hosts.local import LocalHost
from runner.probes import base as probes
from runner.workloads import base as workloads
from runner.workloads.base import WorkloadContext


def main(reps: int, duration: float, lock: str) -> None:
    host = LocalHost()
    plugin = workloads.get("lockbench")
    cpus = len(os.sched_getaffinity(0))
    params = {"lock": lock, "threads": cpus, "duration": duration}
    configs: list[tuple[str, tuple[str, ...]]] = [("none", ())] + [(p, (p,)) for p in probes.known()] + [("all", tuple(probes.known()))]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in configs}
    notes: dict[str, set[str]] = {name: set() for name, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps + 1):  # repetition 0 warms up (compiles lockbench, checks the probes)
            for name, chosen in configs:
                ctx = WorkloadContext(host=host.name, workdir=f"{tmp}/wd", cpus=cpus,
                                      extra={"trial_id": f"bench{rep}", "probes": chosen})
                cpu0 = _children_cpu()
                t0 = time.monotonic()
                out = environments.run_on_host(host, plugin, params, ctx, timeout=duration + 30)
                wall = time.monotonic() - t0
                cpu = _children_cpu() - cpu0
                assert out.status == "ok", out.error
                notes[name].update(out.notes)
                if rep:
                    tput = next(m.value for m in out.metrics if m.name == "throughput" and m.probe is None)
                    results[name].append((tput, wall - (out.workload_wall_s or 0.0), cpu))
    base = statistics.median(t for t, _, _ in results["none"])
    base_cpu = statistics.median(c for _, _, c in results["none"])
    print(f"lockbench {lock}, {cpus} threads, {duration:g} s, on {cpus} CPUs; {reps} interleaved repetitions; medians")
    print(f"{'probes':<12} {'ops/s':>12} {'IQR':>7} {'vs none':>8} {'probe CPU s':>12} {'added s/trial':>14}  note")
    for name, _ in configs:
        tputs = [t for t, _, _ in results[name]]
        tput = statistics.median(tputs)
        q1, _, q3 = statistics.quantiles(tputs, n=4)
        added = statistics.median(a for _, a, _ in results[name])
        cpu = statistics.median(c for _, _, c in results[name]) - base_cpu
        note = "unavailable here" if any("not available" in n for n in notes[name]) and name != "all" else ""
        print(f"{name:<12} {tput:>12.0f} {100 * (q3 - q1) / tput:>6.1f}% {100 * (tput / base - 1):>+7.1f}% "
              f"{cpu:>12.3f} {added:>14.3f}  {note}")


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the workload, the probes' commands and samplers)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, float(sys.argv[2]) if len(sys.argv) > 2 else 1.0,
         sys.argv[3] if len(sys.argv) > 3 else "ttas")
