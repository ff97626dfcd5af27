"""Guest trials: a reused boot against a fresh boot per trial, on this machine and on a remote test-bed
hypervisor host, side by side in one run; and examples/overcommit.yml with and without reuse.

Usage (root, libvirt/QEMU, podman and `ip netns` available):
    .venv/bin/python bench/guest_bench.py [--where local,remote] [--reps 3] [--overcommit] [--overcommit-reps N]

Part 1, for each place (`local`: this machine; `remote`: a network-namespace hypervisor host reached over
SSH, guests through it): a campaign of env kvm, 1 vCPU, lockbench (2 locks x REPS, 0.5 s each), run once
with `guests: {reuse: configuration}` and once with `{reuse: trial}`. Printed per place and mode: boots
(distinct boot ids), start-to-SSH-ready (boot_s, median), per-trial overhead (trial wall minus workload
wall, median) of the trials that reused a boot and of those that booted, and the campaign's wall time
against the ideal a user computes (trials x duration).
Part 2 (--overcommit): examples/overcommit.yml (on this machine) with reuse `trial` (every trial boots, as
before reuse existed) and `configuration` (the default): boots, wall time, ideal. The remote part also
prints the round trip of one command on the host (`host_command_round_trip_s`).
Every figure is labelled with the accelerator the dataset recorded (tcg on the development machines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

from runner.cli import main as runner_main
from runner.records.store import read_campaign

PROJECT = Path(__file__).resolve().parents[1]
DURATION = 0.5


def _launch(matrix: Path, datasets: Path) -> float:
    t0 = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # the campaign's summary; stdout is this script's figures
        rc = runner_main(["launch", str(matrix), "--datasets", str(datasets), "--quiet"])
    wall = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"{matrix.name} failed (exit {rc}); see runner status --datasets {datasets}")
    return wall


def _summary(campaign: str, datasets: Path, wall: float, ideal: float) -> dict[str, object]:
    _, trials, _ = read_campaign(campaign, datasets)
    ok = trials[trials["status"] == "ok"].copy()
    ok["overhead_s"] = ok["wall_s"] - ok["workload_wall_s"]
    booted = ok[ok["boot_s"].notna()]
    reused = ok[ok["boot_s"].isna()]

    def med(series: object) -> float | None:
        return None if len(series) == 0 else round(float(series.median()), 2)  # type: ignore[attr-defined]

    return {
        "trials": len(ok), "accel": sorted(set(ok["accel"])), "boots": int(ok["boot_id"].nunique()),
        "boot_s_median": med(booted["boot_s"]),
        "overhead_reused_median_s": med(reused["overhead_s"]),
        "overhead_booting_median_s": med(booted["overhead_s"]),
        "campaign_wall_s": round(wall, 1), "ideal_s": round(ideal, 1), "efficiency": round(ideal / wall, 3),
    }


def reuse_part(where: str, work: Path, reps: int, inventory: Path | None) -> dict[str, object]:
    out: dict[str, object] = {}
    hosts = f"{{group: hypervisors, inventory: {inventory}}}" if inventory else f"{{group: local, inventory: {PROJECT / 'inventory'}}}"
    for reuse in ("configuration", "trial"):
        campaign = f"guest-bench-{where}-{reuse}"
        matrix = work / f"{campaign}.yml"
        matrix.write_text(
            f"campaign: {campaign}\nhosts: {hosts}\n"
            f"workload: {{name: lockbench, params: {{env: kvm, vcpus: 1, threads: 1, duration: {DURATION}}}}}\n"
            f"axes: {{lock: [ttas, ticket]}}\nrepetitions: {reps}\ntimeout: 60\nretry: {{attempts: 1}}\n"
            f"guests: {{reuse: {reuse}}}\n"
        )
        wall = _launch(matrix, work / "datasets")
        out[reuse] = _summary(campaign, work / "datasets", wall, 2 * reps * DURATION)
    return out


def host_round_trip(inventory: Path) -> float:
    """Median seconds of one command on the remote host over its kept SSH connection (`true`): a reused
    guest trial runs two host commands (the vCPU snapshots), so this explains most of remote vs local."""
    import statistics

    from runner.provision.inventory import connect, load_inventory

    host = connect(load_inventory(inventory).hosts["tb1"])
    try:
        host.run(["true"], timeout=30)
        times = []
        for _ in range(10):
            t0 = time.monotonic()
            host.run(["true"], timeout=30)
            times.append(time.monotonic() - t0)
        return round(statistics.median(times), 3)
    finally:
        host.close()


def overcommit_part(work: Path, reps: int | None) -> dict[str, object]:
    text = (PROJECT / "examples" / "overcommit.yml").read_text()
    doc = yaml.safe_load(text)
    out: dict[str, object] = {}
    for reuse in ("trial", "configuration"):
        campaign = f"guest-bench-overcommit-{reuse}"
        # Edited as text: the file is YAML 1.2 (`on:` is a key), which PyYAML would turn into True.
        edited = re.sub(r"(?m)^campaign: .*$", f"campaign: {campaign}", text)
        edited = re.sub(r"(?m)^hosts: .*$", f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}", edited)
        edited += f"guests: {{reuse: {reuse}}}\n"
        if reps:
            edited = re.sub(r"(?m)^repetitions: .*$", f"repetitions: {reps}", edited)
            doc["repetitions"] = reps
        matrix = work / f"{campaign}.yml"
        matrix.write_text(edited)
        wall = _launch(matrix, work / "datasets")
        n = len(doc["axes"]["lock"]) * len(doc["axes"]["vms"]) * len(doc["axes"]["guest_kernel"]) * doc["repetitions"]
        out[reuse] = _summary(campaign, work / "datasets", wall, n * float(doc["workload"]["params"]["duration"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--where", default="local,remote", help="local, remote or both (default local,remote)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each of the 2 locks (default 3)")
    ap.add_argument("--overcommit", action="store_true", help="also run examples/overcommit.yml with and without reuse")
    ap.add_argument("--overcommit-reps", type=int, default=None, help="repetitions for the over-commit part (default: the file's)")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="guest-bench-"))
    result: dict[str, object] = {}
    places = [w.strip() for w in args.where.split(",") if w.strip()]
    if "local" in places:
        result["local"] = reuse_part("local", work, args.reps, None)
    if "remote" in places:
        from runner.testing.testbed import TestBed

        with TestBed.up(1, work / "bed", "gbench", hypervisors=1) as bed:
            result["remote"] = reuse_part("remote", work, args.reps, bed.inventory_path)
            result["remote"]["host_command_round_trip_s"] = host_round_trip(bed.inventory_path)
    if args.overcommit:
        result["overcommit"] = overcommit_part(work, args.overcommit_reps)
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
