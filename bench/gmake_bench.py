"""The full gmake benchmark on this machine: x86_64_defconfig `make vmlinux` at each core count (VBENCH method).

Not a test: one defconfig build takes tens of minutes on 2 cores. It runs the gmake workload plugin on
LocalHost exactly as a campaign trial does (prepare once, then one timed build per core count and
repetition) and prints builds/hour in total (VBENCH) and per core (MOSBENCH).

Run: .venv/bin/python bench/gmake_bench.py [--config x86_64_defconfig] [--cores 1 2] [--reps 1] [--workdir DIR]
The configured tree is cached in WORKDIR/gmake (kept between runs; delete it to start over).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from runner.hosts.local import LocalHost
from runner.workloads import base
from runner.workloads.base import WorkloadContext
from runner.workloads.gmake import parse_output


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="x86_64_defconfig")
    ap.add_argument("--target", default="vmlinux")
    ap.add_argument("--source", default="linux-source")
    ap.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--workdir", default="/var/tmp/runner-gmake-bench")
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    args = ap.parse_args()

    plugin = base.get("gmake")
    if (why := plugin.missing()) is not None:
        raise SystemExit(f"gmake cannot run here: {why}")
    host = LocalHost()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    ctx = WorkloadContext(host=host.name, workdir=args.workdir, cpus=cpus, extra={"campaign": "bench"})
    plugin.prepare(host, ctx)
    for cores in args.cores:
        times = []
        for rep in range(1, args.reps + 1):
            params = {"source": args.source, "config": args.config, "target": args.target, "cores": cores}
            trial_ctx = WorkloadContext(host.name, args.workdir, cpus, {"campaign": "bench", "trial_id": f"c{cores}r{rep}"})
            started = time.monotonic()
            result = host.run(plugin.command(params, trial_ctx), timeout=args.timeout, cwd=args.workdir)
            if not result.ok:
                raise SystemExit(f"cores {cores} rep {rep}: failed (rc {result.rc}): {result.stderr.strip()[-300:]}")
            doc = parse_output(result.stdout)
            times.append(doc["build_time"])
            print(f"cores {cores} rep {rep}: build {doc['build_time']:.1f} s, prepare {doc['prepare_s']:.1f} s, "
                  f"copy {doc['copy_s']:.1f} s, pre-read {doc['preread_s']:.1f} s, trial {time.monotonic() - started:.1f} s "
                  f"(kernel {doc['kernel_version']}, {doc['config']}, -j{doc['jobs']}, CPUs {doc['cpus']})", flush=True)
        best, median = min(times), statistics.median(times)
        print(f"cores {cores}: builds/hour best {3600 / best:.2f} (median {3600 / median:.2f}), "
              f"per core {3600 / best / cores:.2f}; build time best {best:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
