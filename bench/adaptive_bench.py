"""Fixed against adaptive repetitions on the example campaign (issue 15, "Done when"), side by side in one run.

The project's example matrix (matrix.yml: every lock of lockbench, threads from 1 to 200% of the cores) is
run twice on this machine through `runner launch`, with the probes perf_stat and schedstat:
- fixed: `repetitions: 5`, today's meaning;
- adaptive: `repetitions: {min: 3, max: 20, ci: 0.05}`: rounds add repetitions to the cells whose 95% interval
  of the median is wider than +-5%, until they are tight or reach 20.
For each it prints the trials spent, the wall time, and the wide cells of the deciding metric (throughput) at
the end (the cells whose interval is still wider than +-5%), then writes the adaptive campaign's report and
says whether its "Collapse explained" section shows the probes. The two launches run back to back, fixed
first; the machine's load average is printed before and after each.

Run: .venv/bin/python bench/adaptive_bench.py [--out DIR] [--max 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def _matrix(directory: Path, name: str, repetitions: object) -> Path:
    """The example matrix with another campaign name, repetitions and the probes, edited as text (a YAML
    round trip would turn its `retry: {on: ...}` key into a boolean)."""
    lines = []
    for line in (PROJECT / "matrix.yml").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key == "campaign":
            line = f"campaign: {name}"
        elif key == "repetitions":
            line = f"repetitions: {json.dumps(repetitions)}\nprobes: [perf_stat, schedstat]"
        elif key == "hosts":
            continue  # the built-in default: this machine
        lines.append(line)
    path = directory / f"{name}.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _launch(matrix: Path, datasets: Path) -> float:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "runner.cli", "launch", str(matrix), "--datasets", str(datasets), "--quiet"],
                         cwd=PROJECT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"adaptive_bench: {matrix.name}: runner launch exited {res.returncode}: {res.stderr.strip()[-400:]}")
    return time.monotonic() - t0


def _wide(name: str, datasets: Path, target: float) -> tuple[int, int, int]:
    """(trials run, cells, cells whose throughput interval is wider than +-target)."""
    from runner.analysis.adaptive import ci_rel, workload_totals
    from runner.records.store import read_campaign

    metrics, trials, _ = read_campaign(name, datasets)
    tput = workload_totals(metrics)
    tput = tput[tput["metric"] == "throughput"]
    rel = tput.groupby("cell_id")["value"].apply(lambda v: ci_rel(list(v)))
    return len(trials), len(rel), int((~(rel <= target)).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="keep the datasets and the report here (default: a temporary directory)")
    p.add_argument("--max", type=int, default=20, help="adaptive: most repetitions per cell (default 20)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="adaptive-bench-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        datasets = out / "datasets"
        stamp = time.strftime("%H%M%S")
        runs = [(f"bench-fixed-{stamp}", 5), (f"bench-adaptive-{stamp}", {"min": 3, "max": args.max, "ci": 0.05})]
        print(f"{'repetitions':<34} {'trials':>6} {'wall s':>7} {'cells':>5} {'wide':>4}  load before -> after")
        for name, reps in runs:
            before = _load()
            wall = _launch(_matrix(out, name, reps), datasets)
            n, cells, wide = _wide(name, datasets, 0.05)
            print(f"{str(reps):<34} {n:>6} {wall:>7.1f} {cells:>5} {wide:>4}  {before} -> {_load()}", flush=True)
        report = out / "report"
        res = subprocess.run([sys.executable, "-m", "runner.cli", "report", runs[1][0], "--datasets", str(datasets), "--out", str(report)],
                             cwd=PROJECT, capture_output=True, text=True)
        html = (report / "report.html").read_text() if (report / "report.html").exists() else ""
        shown = "Collapse explained" in html and ("perf_stat" in html or "schedstat" in html)
        print(f"report of the adaptive campaign: exit {res.returncode}; collapse explained with probes: {'yes' if shown else 'no'}"
              + (f" ({report})" if args.out else ""))


if __name__ == "__main__":
    main()
