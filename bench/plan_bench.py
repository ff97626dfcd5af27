"""Time to plan 10,000 trials: parse and validate a matrix, expand it, give every trial its id, order them.

The matrix: lockbench, 5 locks x 50 thread counts (25 absolute, 25 relative to an 8-CPU host: '500%' ..
'2900%') x 2 pinnings x 2 cs_work values = 1,000 cells x 10 repetitions = 10,000 trials; each order (as
written, interleave, shuffle) is timed.
Run: .venv/bin/python bench/plan_bench.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from runner.matrix.load import parse_matrix
from runner.trials import plan

TARGET = 10_000
ROUNDS = 5


def matrix_text(order: str) -> str:
    threads = list(range(1, 26)) + [f"{p}%" for p in range(500, 3000, 100)]  # 25 absolute + 25 relative
    return (
        "campaign: plan-bench\n"
        "workload: {name: lockbench, params: {duration: 1}}\n"
        "axes:\n"
        "  lock: [ttas, ticket, mcs, mutex, oticket]\n"
        f"  threads: {threads!r}\n"
        "  thread_pin: [none, compact]\n"
        "  cs_work: [100, 1000]\n"
        "repetitions: 10\n"
        f"order: {order}\nseed: 7\n"
    ).replace("'", '"')


def main() -> None:
    cpus = {"localhost": 8}
    print(f"planning {TARGET} trials, median of {ROUNDS} rounds (matrix parse + validation + expansion + ids + order)")
    for order in ("as-written", "interleave", "shuffle"):
        text = matrix_text(order)
        times, count = [], 0
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            trials = plan(parse_matrix(text, Path("plan-bench.yml")), cpus)
            times.append(time.perf_counter() - t0)
            count = len(trials)
        assert count == TARGET and len({t.trial_id for t in trials}) == count
        print(f"  order {order:<10}: {count} trials in {statistics.median(times):.3f} s (min {min(times):.3f} s)")


if __name__ == "__main__":
    main()
