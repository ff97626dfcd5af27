"""Guest kernels built from source (issue 22): the build from a cold cache and from a warm one, and
boot-to-SSH-ready of the built kernel against Debian's kernel, side by side in one run.

Usage (root, libvirt/QEMU, Debian's linux-source-6.1):
    .venv/bin/python bench/kernel_bench.py [--reps 3] [--config tinyconfig] [--skip-build] [--cache DIR]

1. Build: the recipe {source: linux-source, config: CONFIG} into an empty kernel cache (cold: unpack, config,
   make bzImage with -j<nproc>), then again (warm: the cache answers, nothing is built). With --skip-build the
   cold build is not timed; the runner's own cache (RUNNER_CACHE) is used and built if needed.
2. Boot: a campaign of env kvm, 2 vCPUs, lockbench 0.3 s, `guests: {reuse: trial}` (every trial boots), REPS
   trials per kernel (`default` = Debian's kernel with its modules, `built` = the recipe): start-to-SSH-ready
   (`boot_s`) median and range, with the accelerator the dataset recorded (tcg on the development machines),
   and what the guests said (uname -r, the PV spinlock line).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from runner.provision import kernel as kr
from runner.provision import kernelbuild as kb
from runner.records.store import read_campaign

from image_bench import _launch  # bench/ is the script's folder: one launch helper for the benches

PROJECT = Path(__file__).resolve().parents[1]


def build(cache: Path, config: str) -> dict[str, object]:
    recipe = kr.Recipe("bench", kr.LINUX_SOURCE, config=config)
    out: dict[str, object] = {"config": config, "cores": os.cpu_count(), "load_before": [round(x, 1) for x in os.getloadavg()]}
    for label in ("cold", "warm"):
        t0 = time.monotonic()
        built = kb.ensure_built(recipe, cache, progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
        out[f"{label}_s"] = round(time.monotonic() - t0, 2)
    phases = [line.removeprefix("### ") for line in built.log.read_text().splitlines() if line.startswith("### ")]
    out |= {"build": built.digest, "release": built.release, "bzimage_kb": built.bzimage.stat().st_size // 1024,
            "compiled_files": sum(1 for line in built.log.read_text().splitlines() if line.startswith(("  CC ", "  AS "))),
            "phases": phases, "load_after": [round(x, 1) for x in os.getloadavg()]}
    return out


def boot(tmp: Path, reps: int, config: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in ("default", "built"):
        campaign = f"bench-kernel-boot-{name}"
        matrix = tmp / f"{campaign}.yml"
        kernels = f"guest_kernels:\n  built: {{build: {{source: linux-source, config: {config}}}}}\n"
        matrix.write_text(
            f"campaign: {campaign}\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n{kernels}"
            f"workload: {{name: lockbench, params: {{env: kvm, guest_kernel: {name}, vcpus: 2, threads: 1, duration: 0.3}}}}\n"
            f"axes: {{lock: [ttas]}}\nrepetitions: {reps}\nguests: {{reuse: trial}}\ntimeout: 180\nretry: {{attempts: 1}}\n"
        )
        _launch(matrix, tmp / "ds")
        _, trials, _ = read_campaign(tmp / "ds" / campaign)
        ok = trials[trials["status"] == "ok"]
        out[name] = {"accel": sorted(set(ok["accel"])), "boots": int(ok["boot_id"].nunique()),
                     "boot_s_median": round(float(ok["boot_s"].median()), 1),
                     "boot_s_range": [round(float(ok["boot_s"].min()), 1), round(float(ok["boot_s"].max()), 1)],
                     "guest_uname": sorted(set(ok["guest_uname"].dropna())),
                     "guest_pvspin": sorted(set(ok["guest_pvspin"].dropna()))}
    d, b = out["default"]["boot_s_median"], out["built"]["boot_s_median"]  # type: ignore[index]
    out["speedup"] = round(d / b, 2) if b else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--config", default="tinyconfig")
    ap.add_argument("--skip-build", action="store_true", help="do not time a cold build (use the runner's cache)")
    ap.add_argument("--skip-boot", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kernel-bench-", dir="/var/tmp") as tmp:
        if not args.skip_build:
            cold = Path(tmp) / "cache"
            print(json.dumps({"build": build(cold, args.config)}), flush=True)
            # The boot part uses the runner's cache: put the build there unless it has it already.
            mine = kb.cache_root()
            for d in (cold / "kernels").iterdir():
                if not d.name.startswith(".") and not (mine / d.name).exists():
                    mine.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(d, mine / d.name)
            (mine / "recipes").mkdir(parents=True, exist_ok=True)
            for f in (cold / "kernels/recipes").iterdir():
                if not (mine / "recipes" / f.name).exists():
                    shutil.copyfile(f, mine / "recipes" / f.name)
        if not args.skip_boot:
            print(json.dumps({"boot_to_ssh": boot(Path(tmp), args.reps, args.config)}), flush=True)


if __name__ == "__main__":
    main()
