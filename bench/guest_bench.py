"""Time from `virsh create` to a guest's SSH server answering, median of N boots, labelled by accelerator;
and the per-trial overhead of guest trials in a real campaign (trial wall time minus workload wall time).

Usage (root, libvirt/QEMU installed):  .venv/bin/python bench/guest_bench.py [--vcpus 2] [--runs 3]
    [--accel auto|kvm|tcg] [--work DIR] [--trials 2]
`auto` probes KVM first (libvirt.probe_accel) and falls back to TCG; the figure is printed with the
accelerator actually used, so a TCG figure is never mistaken for a KVM one. `--trials N` also runs a
campaign of N repetitions of env kvm with vms 1 and 2 and env container (lockbench, 0.5 s) and reports
the overhead of each (median), labelled with the accelerator the dataset recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from runner.cli import main as runner_main
from runner.provision import image, libvirt
from runner.provision.guest import describe_guest
from runner.provision.topology import read_topology


def boot_once(img: image.GuestImage, accel: str, vcpus: int, run: int, log_dir: Path) -> dict[str, float]:
    address = libvirt.guest_address(run)
    spec = describe_guest(
        "kvm",
        {"vcpus": vcpus, "memory": 512, "accel": accel, "guest_kernel": "bench"},
        read_topology(), {"bench": img.catalog_entry()}, "guest-bench", run, address=address,
    )
    start = time.monotonic()
    guest = libvirt.start(spec, log_dir=log_dir)
    try:
        init_s = libvirt.wait_console(guest.console_log, image.INIT_MARKER, 120)
        libvirt.wait_ssh(address, timeout=180)
        return {"init_s": init_s if init_s is not None else float("nan"), "ssh_ready_s": time.monotonic() - start}
    finally:
        libvirt.destroy(spec.name)


def trial_overhead(work: Path, vcpus: int, repetitions: int) -> list[dict[str, object]]:
    """Run small guest campaigns (env kvm with vms 1 and 2, env container) through `runner launch`;
    per (env, vms, accel): median trial wall, workload wall and their difference, the overhead."""
    import pandas as pd

    from runner.records.store import read_campaign

    project = Path(__file__).resolve().parents[1]
    rows = []
    for env, vms in (("kvm", "[1, 2]"), ("container", "[1]")):
        campaign = f"guest-bench-{env}"
        matrix = work / f"{campaign}.yml"
        matrix.write_text(
            f"campaign: {campaign}\nhosts: {{group: local, inventory: {project / 'inventory'}}}\n"
            f"workload: {{name: lockbench, params: {{env: {env}, lock: ttas, threads: {vcpus}, vcpus: {vcpus}, duration: 0.5}}}}\n"
            f"axes: {{vms: {vms}}}\nrepetitions: {repetitions}\ntimeout: 60\nretry: {{attempts: 1}}\n"
        )
        if runner_main(["launch", str(matrix), "--datasets", str(work / "datasets")]) != 0:
            raise SystemExit(f"the {env} campaign failed; see runner status {campaign} --datasets {work / 'datasets'}")
        _, trials, _ = read_campaign(campaign, work / "datasets")
        rows.append(trials[trials["status"] == "ok"].assign(env=env))
    trials = pd.concat(rows)
    trials["overhead_s"] = trials["wall_s"] - trials["workload_wall_s"]
    out = []
    for (env, vms, accel), g in trials.groupby(["env", "vms", "accel"]):
        out.append({"env": env, "vms": int(vms), "accel": accel, "trials": len(g),
                    "trial_wall_median_s": round(float(g["wall_s"].median()), 2),
                    "workload_wall_median_s": round(float(g["workload_wall_s"].median()), 2),
                    "overhead_median_s": round(float(g["overhead_s"].median()), 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vcpus", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    ap.add_argument("--work", type=Path, default=None, help="directory for the image cache and logs")
    ap.add_argument("--trials", type=int, default=0, help="also measure guest trial overhead with N repetitions")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="guest-bench-"))
    t0 = time.monotonic()
    img = image.build_image(work / "images", key_path=image.campaign_keypair(work / "keys"))
    build_s = time.monotonic() - t0
    libvirt.ensure_libvirtd()
    created = libvirt.ensure_bridge()
    try:
        accel = libvirt.probe_accel(img, log_dir=work / "logs") if args.accel == "auto" else args.accel
        runs = [boot_once(img, accel, args.vcpus, i, work / "logs") for i in range(args.runs)]
    finally:
        if created:
            libvirt.remove_bridge()
    ssh = [r["ssh_ready_s"] for r in runs]
    result = {
        "accel": accel,
        "vcpus": args.vcpus,
        "runs": args.runs,
        "image_build_s": round(build_s, 2),
        "ssh_ready_median_s": round(statistics.median(ssh), 2),
        "ssh_ready_min_s": round(min(ssh), 2),
        "ssh_ready_max_s": round(max(ssh), 2),
        "init_median_s": round(statistics.median(r["init_s"] for r in runs), 2),
        "kernel": img.kernel_release,
    }
    if args.trials:
        result["trial_overhead"] = trial_overhead(work, args.vcpus, args.trials)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
