"""runner plan: show what a matrix expands to, without touching any host."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runner.cli import int_at_least
from runner.execution import environments
from runner.execution.campaign import check_guests, resolve_hosts
from runner.matrix.expand import is_relative
from runner.matrix.load import load_matrix
from runner.trials import Trial, boots_needed, plan, trial_guest_key
from runner.workloads import base

HELP = """\
Expand a matrix file into trials and show them: how many cells and repetitions, the order they
will run in, their ids, and an estimate of the duration. No host is contacted: values relative to
the CPU count ("50%") are resolved with --cpus, or with this machine's CPU count.

With --inventory (as for launch), the matrix's host group is looked up there (still without contacting
a host): placement `each` plans the whole matrix for every host of the group, and the estimate is for
that many hosts. Guest trials show how many guest boots the plan needs (see guests.reuse).

examples:
  runner plan matrix.yml
  runner plan matrix.yml --cpus 80 --show 20     as it would expand on an 80-core host
  runner plan matrix.yml --inventory inventory/lab.yml
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="show the trials a matrix expands to", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("matrix", type=Path, help="matrix file (YAML)")
    p.add_argument("--cpus", type=int_at_least(1), help="CPU count that relative values refer to (default: this machine's)")
    p.add_argument("--hosts", type=int_at_least(1), default=1, help="hosts sharing the work, for the estimate (default 1)")
    p.add_argument("--show", type=int_at_least(-1), default=30, help="trials to list (default 30; 0 for none, -1 for all)")
    p.add_argument("--inventory", default=os.environ.get("RUNNER_INVENTORY"),
                   help="Ansible inventory with the matrix's host group (env RUNNER_INVENTORY; default: the matrix's)")
    p.set_defaults(func=run)


def make_plan(matrix_path: Path, cpus: int | None = None, inventory: str | None = None) -> tuple[object, list[Trial]]:
    matrix = load_matrix(matrix_path)
    n = cpus or len(os.sched_getaffinity(0))
    names = ["planned-host"]
    if inventory is not None or matrix.inventory is not None:
        names = [s.name for s in resolve_hosts(matrix, inventory)] or names
    trials = plan(matrix, dict.fromkeys(names if matrix.placement == "each" else names[:1], n))
    check_guests(matrix, trials)
    return matrix, trials


def summarize(trials: list[Trial], workload: str, hosts: int, reuse: str = "configuration") -> Mapping[str, float]:
    plugin = base.get(workload)
    total = environments.estimate_trials(plugin, trials, reuse)
    return {
        "trials": len(trials),
        "cells": len({t.cell_id for t in trials}),
        "estimate_s": total / max(1, hosts),
        "boots": boots_needed(trials, reuse),
    }


def run(args: argparse.Namespace) -> int:
    matrix, trials = make_plan(args.matrix, args.cpus, args.inventory)
    hosts = args.hosts
    if args.inventory is not None or matrix.inventory is not None:
        hosts = len(resolve_hosts(matrix, args.inventory))
    info = summarize(trials, matrix.workload, hosts, matrix.reuse)
    console = Console()
    reps = matrix.repetitions
    console.print(
        f"[bold]{matrix.campaign}[/]: {info['trials']} trials = {info['cells']} cells x {reps} repetitions, "
        f"order {matrix.order}" + (f" (seed {matrix.seed})" if matrix.order == "shuffle" else "")
    )
    console.print(f"workload {matrix.workload} on hosts {matrix.hosts!r} ({matrix.placement}); timeout {matrix.timeout:g} s, "
                  f"{matrix.retry.attempts} attempts on {', '.join(sorted(matrix.retry.on))}")
    console.print(f"estimated duration: {_fmt(info['estimate_s'])} on {hosts} host(s), without provisioning")
    if info["boots"]:
        console.print(f"guest boots: {info['boots']} (guests.reuse: {matrix.reuse}; "
                      f"{sum(1 for t in trials if trial_guest_key(t) is not None)} trials in guests or containers)")
    show = len(trials) if args.show < 0 else args.show
    if show:
        table = Table(show_edge=False)
        table.add_column("#", justify="right")
        table.add_column("trial id")
        table.add_column("cell")
        # Relative CPU counts given as workload parameters ("100%") are shown resolved: per environment,
        # they follow a guest's vCPUs or a container's cpuset.
        relative = [k for k, v in matrix.params.items() if k not in matrix.axes and is_relative(v)]
        for axis in matrix.axes:
            table.add_column(axis)
        for key in relative:
            table.add_column(f"{key} ({matrix.params[key]})", justify="right")
        table.add_column("rep", justify="right")
        for i, t in enumerate(trials[:show], 1):
            p = t.param_dict
            table.add_row(str(i), t.trial_id, t.cell_id[:8], *(str(p[a]) for a in matrix.axes), *(str(p.get(k, "")) for k in relative),
                          str(t.repetition))
        console.print(table)
        if show < len(trials):
            console.print(f"... {len(trials) - show} more (--show -1 lists all)")
    return 0


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
