"""Guest images with a full userland: the Debian image build cold and warm, boot to SSH-ready of `debian`
against `minimal`, and the kernel build (gmake) on the host, in a Debian container and in a Debian guest,
side by side in one run.

Usage (root, libvirt/QEMU, podman, mmdebstrap available):
    .venv/bin/python bench/image_bench.py [--reps 3] [--gmake host,container[,kvm]] [--config tinyconfig]
                                          [--target init/]

1. Build: the root filesystem and the disk into an empty cache (cold), then again (warm: the cache answers).
2. Boot: a campaign of env kvm, 2 vCPUs, lockbench 0.3 s, `guests: {reuse: trial}` (every trial boots),
   REPS trials per image (`minimal`, `debian`): start-to-SSH-ready (`boot_s`) median and range.
3. gmake (tinyconfig, target init/ by default) with vcpus 2 and cores "100%" in each place named by
   --gmake, REPS repetitions: builds/hour median; the kvm place (a TCG guest here) takes far longer
   (unpacking and configuring the tree inside the guest): left out unless named.
Every guest figure is labelled with the accelerator the dataset recorded (tcg on the development machines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from runner.cli import main as runner_main
from runner.provision import image, rootfs
from runner.records.store import read_campaign

PROJECT = Path(__file__).resolve().parents[1]


def _launch(matrix: Path, datasets: Path) -> float:
    t0 = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):
        rc = runner_main(["launch", str(matrix), "--datasets", str(datasets), "--quiet"])
    if rc != 0:
        raise SystemExit(f"{matrix.name} failed (exit {rc}); see runner status --datasets {datasets}")
    return time.monotonic() - t0


def build(tmp: Path) -> dict[str, float]:
    cache = tmp / "cache"
    key = image.campaign_keypair(cache / "keys")
    kernel = image.newest_kernel()
    initrd = kernel.parent / kernel.name.replace("vmlinuz", "initrd.img", 1)
    out: dict[str, float] = {}
    for label in ("cold", "warm"):
        t0 = time.monotonic()
        base = rootfs.build_rootfs(cache, rootfs.Recipe())
        t1 = time.monotonic()
        disk = rootfs.build_disk(cache, base, key_path=key, kernel=kernel, initrd=initrd)
        t2 = time.monotonic()
        out[f"rootfs_{label}_s"] = round(t1 - t0, 2)
        out[f"disk_{label}_s"] = round(t2 - t1, 2)
    out["rootfs_tar_mb"] = round(base.tar.stat().st_size / 1e6)
    out["disk_qcow2_mb"] = round(disk.disk.stat().st_size / 1e6)
    out["packages"] = len(base.packages)
    return out


def boot(tmp: Path, reps: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in ("minimal", "debian"):
        campaign = f"bench-image-boot-{name}"
        matrix = tmp / f"{campaign}.yml"
        matrix.write_text(
            f"campaign: {campaign}\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
            f"workload: {{name: lockbench, params: {{env: kvm, guest_image: {name}, vcpus: 2, threads: 1, duration: 0.3}}}}\n"
            f"axes: {{lock: [ttas]}}\nrepetitions: {reps}\nguests: {{reuse: trial}}\ntimeout: 120\nretry: {{attempts: 1}}\n"
        )
        _launch(matrix, tmp / "ds")
        _, trials, _ = read_campaign(campaign, tmp / "ds")
        ok = trials[trials["status"] == "ok"]
        out[name] = {"accel": sorted(set(ok["accel"])), "boots": int(ok["boot_id"].nunique()),
                     "boot_s_median": round(float(ok["boot_s"].median()), 1),
                     "boot_s_range": [round(float(ok["boot_s"].min()), 1), round(float(ok["boot_s"].max()), 1)]}
    return out


def gmake(tmp: Path, places: list[str], reps: int, config: str, target: str) -> dict[str, object]:
    campaign = "bench-image-gmake"
    matrix = tmp / f"{campaign}.yml"
    matrix.write_text(
        f"campaign: {campaign}\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        f"workload: {{name: gmake, params: {{guest_image: debian, config: {config}, target: {target}, cores: '100%', "
        f"vcpus: 2, memory: 4096}}}}\naxes: {{env: {json.dumps(places)}}}\nrepetitions: {reps}\norder: interleave\n"
        "timeout: 7200\nretry: {attempts: 1}\n"
    )
    wall = _launch(matrix, tmp / "ds")
    metrics, trials, _ = read_campaign(campaign, tmp / "ds")
    tot = metrics[(metrics["metric"] == "builds_per_hour") & metrics["vm"].isna()]
    out: dict[str, object] = {"campaign_wall_s": round(wall, 1)}
    for env in places:
        rows = tot[tot["env"] == env]
        accel = sorted(set(trials[trials["env"] == env]["accel"].dropna()))
        out[env] = {"accel": accel, "builds_per_hour_median": round(float(rows["value"].median()), 1), "n": len(rows)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gmake", default="host,container", help="places for the gmake part (host, container, kvm); '' skips it")
    ap.add_argument("--config", default="tinyconfig")
    ap.add_argument("--target", default="init/")
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="image-bench-", dir="/var/tmp") as tmp:
        if not args.skip_build:
            print(json.dumps({"build": build(Path(tmp))}), flush=True)
        print(json.dumps({"boot_to_ssh": boot(Path(tmp), args.reps)}), flush=True)
        places = [p for p in args.gmake.split(",") if p]
        if places:
            print(json.dumps({"gmake": gmake(Path(tmp), places, args.reps, args.config, args.target)}), flush=True)


if __name__ == "__main__":
    main()
