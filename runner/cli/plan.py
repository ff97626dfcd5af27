"""runner plan: show what a matrix expands to, without touching any host."""

from __future__ import annotations

import argparse
import collections
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from runner.cli import add_group_option, add_inventory_option, add_json_option, add_known_hosts_option, exit_status, int_at_least, on_group
from runner import defaults
from runner.errors import UnknownNameError
from runner.execution import environments
from runner.execution.campaign import check_guests, inventory_path, resolve_hosts
from runner.execution.placement import EnvPlacement, Placement, declared_abilities, makespan, place_envs, trial_env
from runner.execution.preflight import check_host_envs
from runner.hosts.ssh import HostSpec, check_known_hosts_file
from runner.matrix.expand import is_relative
from runner.matrix.load import Matrix, load_matrix
from runner.provision import environments as envs
from runner.provision import kernelbuild
from runner.trials import CANARY, Trial, boots_needed, canary_cells, canary_rule, place_canaries, plan, trial_guest_key
from runner.workloads import base

HELP = """\
Expand a matrix file into trials and show them: how many cells and repetitions, the order they
will run in, their ids, and an estimate of the duration. No host is contacted: values relative to
the CPU count ("50%") are resolved with --cpus, or with this machine's CPU count.

The matrix's host group is looked up in the inventory launch would use (--inventory, else the matrix's,
else inventory/ beside it, else the project's), still without contacting a host, so the count is what
launch will run: placement `each` plans the whole matrix for every host of the group (trials x hosts, the
table shows each trial's host), and the estimate is for that many hosts. When no inventory was named and
the default one lacks the group, --hosts placeholder hosts stand in (said in the output). Guest trials show
how many guest boots the plan needs (see guests.reuse).

An executable inventory file (an Ansible dynamic inventory script) is run only when you name the inventory
with --inventory or RUNNER_INVENTORY; one found by default or named in the matrix file is refused, unrun.

examples:
  runner plan matrix.yml
  runner plan matrix.yml --cpus 80 --show 20     as it would expand on an 80-core host
  runner plan matrix.yml --inventory inventory/lab.yml
  runner plan matrix.yml --inventory inventory/lab.yml --group kvmhosts   that group, not the matrix's hosts:
  runner plan each.yml --hosts 4                 placement each, on 4 hosts not in any inventory yet
"""


MAX_CPUS = 65536  # more CPUs than any one Linux host has (the kernel's NR_CPUS tops out at 8192)
MAX_HOSTS = 100000  # a plan for more placeholder hosts than any lab has is a typo


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="show the trials a matrix expands to", description=HELP, epilog=exit_status(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("matrix", type=Path, help="matrix file (YAML)")
    p.add_argument("--cpus", type=int_at_least(1, MAX_CPUS), help="CPU count that relative values refer to (default: this machine's)")
    p.add_argument("--hosts", type=int_at_least(1, MAX_HOSTS), default=1,
                   help="hosts to plan for when the inventory does not have the matrix's group (default 1)")
    p.add_argument("--show", type=int_at_least(-1), default=30, help="trials to list (default 30; 0 for none, -1 for all)")
    add_inventory_option(p, "as launch: the matrix's, else inventory/ beside it, else the project's")
    add_group_option(p)
    add_json_option(p, "the plan (counts, estimate, every trial)")
    add_known_hosts_option(p)
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Plan:
    """What launch would run: the trials, on which hosts, a note when the hosts are placeholders, the hosts'
    inventory entries (specs: their runner_envs, runner_boot_s, runner_trial_s) and which hosts take which
    environments as the inventory says (envs: launch narrows it down with what it finds on the hosts)."""

    matrix: Matrix
    trials: list[Trial]
    hosts: list[str]
    note: str | None = None
    specs: tuple[Any, ...] = ()
    envs: EnvPlacement | None = None


def placeholder_hosts(n: int) -> list[str]:
    """Names for `n` hosts not in any inventory (pure)."""
    return ["planned-host"] if n == 1 else [f"planned-host{i}" for i in range(1, n + 1)]


def plan_hosts(matrix: Matrix, inventory: str | None, n_hosts: int, known_hosts: Path | None = None) -> tuple[list[str], str | None]:
    """The hosts launch would run on (names), as launch resolves them; (placeholders, why) when no inventory
    was named and the default one does not exist or lacks the matrix's group."""
    specs, note = plan_specs(matrix, inventory, n_hosts, known_hosts)
    return [s.name for s in specs], note


def plan_specs(matrix: Matrix, inventory: str | None, n_hosts: int, known_hosts: Path | None = None) -> tuple[list[Any], str | None]:
    """plan_hosts with the hosts' inventory entries (HostSpecs; placeholders: bare specs named by placeholder_hosts)."""
    named = inventory is not None or matrix.inventory is not None
    path = inventory_path(matrix, inventory)
    if named or path.exists():
        try:
            return resolve_hosts(matrix, inventory, known_hosts), None
        except UnknownNameError:
            if named:
                raise
            why = f"no host or group {matrix.hosts!r} in {path}"
    else:
        why = f"no inventory {path}"
    if known_hosts is not None:
        check_known_hosts_file(known_hosts)
    names = placeholder_hosts(n_hosts)
    return [HostSpec(name=n, address=n) for n in names], f"{why}: planned for {len(names)} placeholder host(s) (--hosts)"


def make_plan(
    matrix_path: Path, cpus: int | None = None, inventory: str | None = None, n_hosts: int = 1, known_hosts: Path | None = None,
    group: str | None = None,
) -> Plan:
    """The trials launch would run (placement `each`: every trial on every host of the group)."""
    matrix = on_group(load_matrix(matrix_path), group)
    n = cpus or len(os.sched_getaffinity(0))
    specs, note = plan_specs(matrix, inventory, n_hosts, known_hosts)
    specs = specs or [HostSpec(name=h, address=h) for h in placeholder_hosts(1)]
    names = [s.name for s in specs]
    trials = plan(matrix, dict.fromkeys(names if matrix.placement == "each" else names[:1], n))
    check_guests(matrix, trials)
    # Which hosts take which environments, as the inventory says (runner_envs); launch also asks the hosts.
    check_host_envs(specs)
    wanted = list(dict.fromkeys(trial_env(t) for t in trials))
    placed = place_envs(wanted, declared_abilities(wanted, specs), group=matrix.hosts)
    if placed.left_out:
        specs = [s for s in specs if s.name not in placed.left_out]
        names = [s.name for s in specs]
    if matrix.placement == "each":
        trials = [t for t in trials if t.host is None or (t.host in names and placed.runs(str(t.host), trial_env(t)))]
    return Plan(matrix, trials, names, note, tuple(specs), placed)


def per_host(trials: list[Trial]) -> dict[str, int]:
    """Trials per host, for placement `each` (pure)."""
    return dict(sorted(collections.Counter(t.host for t in trials if t.host is not None).items()))


def summarize(trials: list[Trial], workload: str, hosts: int | Plan, reuse: str = "configuration") -> Mapping[str, float]:
    """Counts and the estimate: over `hosts` hosts alike (a number), or as the dispatcher would spread the
    trials over a Plan's hosts (each host its environments, its runner_boot_s and runner_trial_s)."""
    plugin = base.get(workload)
    if isinstance(hosts, Plan):
        planned = hosts
        specs = {s.name: s for s in planned.specs}
        estimate, _ = makespan(trials, planned.hosts or placeholder_hosts(1), environments.host_cost(plugin, reuse, specs),
                               runs=Placement(planned.matrix.placement, planned.envs).runs, per_host=planned.matrix.placement == "each")
    else:
        estimate = environments.estimate_trials(plugin, trials, reuse) / max(1, hosts)
    return {
        "trials": len(trials),
        "cells": len({t.cell_id for t in trials}),
        "estimate_s": estimate,
        "boots": boots_needed(trials, reuse),
    }


def estimate_basis(planned: Plan) -> str:
    """What the estimate rests on, in words (pure): the inventory's figures for the hosts that give them, else
    the built-in ones (boots as under TCG on a development machine, no cost per trial beyond the workload)."""
    given = [s.name for s in planned.specs if getattr(s, "boot_s", ()) or getattr(s, "trial_s", None) is not None]
    if not given:
        return "workload estimates and built-in boot times (runner_boot_s, runner_trial_s in the inventory make it the hosts' own)"
    if len(given) == len(planned.specs):
        return "workload estimates and the inventory's runner_boot_s and runner_trial_s of every host"
    return f"workload estimates; the inventory's runner_boot_s and runner_trial_s for {', '.join(given)}, built-in figures for the others"


def run(args: argparse.Namespace) -> int:
    planned = make_plan(args.matrix, args.cpus, args.inventory, args.hosts, args.known_hosts, args.group)
    matrix, trials = planned.matrix, planned.trials
    hosts = len(planned.hosts)
    info = summarize(trials, matrix.workload, planned, matrix.reuse)
    if args.json:
        cpus = args.cpus or len(os.sched_getaffinity(0))
        print(json.dumps(plan_json(planned, info, with_canaries(matrix, trials, planned.hosts, cpus)), indent=2, default=str))
        return 0
    console = Console()
    reps = matrix.repetitions
    counts = per_host(trials) if matrix.placement == "each" else {}
    order = f"order {matrix.order}" + (f" (seed {matrix.seed})" if matrix.order == "shuffle" else "")
    if counts:
        first = next(iter(counts))
        cells = len({t.cell_id for t in trials if t.host == first})
        each = f"{counts[first]} per host x {len(counts)} hosts" if len(set(counts.values())) == 1 else "per host as below"
        console.print(f"[bold]{matrix.campaign}[/]: {info['trials']} trials = {each} ({cells} cells x {reps} repetitions on each), {order}")
    else:
        console.print(f"[bold]{matrix.campaign}[/]: {info['trials']} trials = {info['cells']} cells x {reps} repetitions, {order}")
    console.print(f"workload {matrix.workload} on hosts {matrix.hosts!r} ({matrix.placement}); timeout {matrix.timeout:g} s, "
                  f"{matrix.retry.attempts} attempts on {', '.join(sorted(matrix.retry.on))}")
    if planned.note:
        console.print(f"[yellow]{planned.note}[/]", highlight=False)
    plugin = base.get(matrix.workload)
    for warning in dict.fromkeys(w for t in trials for w in _plan_warnings(plugin, t.param_dict)):
        console.print(f"[yellow]warning: {warning}[/]", highlight=False)
    if counts:
        console.print("trials per host: " + ", ".join(f"{h} {n}" for h, n in counts.items()), highlight=False)
    else:
        console.print(f"hosts sharing the trials: {', '.join(planned.hosts)}", highlight=False)
    if planned.envs is not None:
        for line in env_lines(planned):
            console.print(line, highlight=False)
    console.print(f"estimated duration: {_fmt(info['estimate_s'])} on {hosts} host(s), without provisioning "
                  f"({estimate_basis(planned)})", highlight=False)
    if (bounds := repetition_bounds(matrix, len(trials))) is not None:
        console.print(bounds, highlight=False)
    if matrix.probes:
        console.print(f"probes around every trial: {', '.join(matrix.probes)} (see docs/probes.md for their cost)", highlight=False)
    if (line := canary_line(matrix, trials, planned.hosts, args.cpus or len(os.sched_getaffinity(0)))) is not None:
        console.print(line, highlight=False)
        trials = with_canaries(matrix, trials, planned.hosts, args.cpus or len(os.sched_getaffinity(0)))
    for line in kernelbuild.plan_lines(kernelbuild.recipes_of(t.param_dict for t in trials)):
        console.print(line, highlight=False)
    if info["boots"]:
        console.print(f"guest boots: {info['boots']} (guests.reuse: {matrix.reuse}; "
                      f"{sum(1 for t in trials if trial_guest_key(t) is not None)} trials in guests or containers)")
    show = len(trials) if args.show < 0 else args.show
    if show:
        table = Table(show_edge=False)
        table.add_column("#", justify="right")
        table.add_column("trial id")
        table.add_column("cell")
        if counts:
            table.add_column("host")
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
            rep = f"canary {t.repetition}" if t.role == CANARY else str(t.repetition)
            table.add_row(str(i), t.trial_id, t.cell_id[:8], *([str(t.host)] if counts else []), *(str(p[a]) for a in matrix.axes),
                          *(str(p.get(k, "")) for k in relative), rep)
        console.print(table)
        if show < len(trials):
            console.print(f"... {len(trials) - show} more (--show -1 lists all)")
    return 0


def env_lines(planned: Plan) -> list[str]:
    """Which hosts take which environments, with their trial counts, and the hosts left out (pure); nothing when
    every host takes everything (the inventory gives no runner_envs) and no host is left out."""
    envs = planned.envs
    if envs is None:
        return []
    if all(envs.runs_all(h) for h in planned.hosts) and not envs.left_out and not envs.notes:
        if len(planned.hosts) > 1:
            return [f"every host takes every environment ({', '.join(envs.hosts)}) as far as the inventory says (runner_envs); "
                    "launch checks each host's tools and hypervisor"]
        return []
    counts = collections.Counter(trial_env(t) for t in planned.trials)
    lines = ["environments per host (the inventory's runner_envs; launch also checks each host's tools and hypervisor):"]
    for env, names in envs.hosts.items():
        lines.append(f"  {env}: {', '.join(names)} ({counts.get(env, 0)} trials)")
    return lines + [f"  {why}" for why in envs.left_out.values()] + [f"  {note}" for note in envs.notes]


def plan_json(planned: Plan, info: Mapping[str, float], trials: list[Trial]) -> dict[str, object]:
    """What `runner plan --json` prints: the counts, the estimate and every trial in the order it runs (pure)."""
    matrix = planned.matrix
    return {
        "campaign": matrix.campaign, "workload": matrix.workload, "hosts": planned.hosts, "placement": matrix.placement,
        "note": planned.note, "order": matrix.order, "repetitions": matrix.repetitions, **info,
        "envs": {env: list(names) for env, names in planned.envs.hosts.items()} if planned.envs is not None else None,
        "trials_list": [{"trial_id": t.trial_id, "cell_id": t.cell_id, "host": t.host, "repetition": t.repetition,
                         "role": t.role, "params": t.param_dict} for t in trials],
    }


def repetition_bounds(matrix: Matrix, planned: int) -> str | None:
    """Repetitions as bounds: the least and most trials the campaign can run, and the rule (pure)."""
    rules = matrix.adaptive
    if rules is None:
        return None
    most = planned // rules.min * rules.max
    metric = rules.metric or "throughput (else the first higher-is-better metric)"
    return (f"repetitions until the interval is tight: {rules.min} to {rules.max} per cell, more in rounds while the 95% interval "
            f"of the median of {metric} is wider than +-{100 * rules.ci:g}%: {planned} to {most} trials; the estimate is for {planned}")


def canary_runs(trials: int, every: int | None) -> int:
    """Canary runs on a host that runs `trials` trials of the matrix, by the trial count alone: before its 1st,
    (every+1)th, ... trial and once after its last (pure)."""
    if not trials:
        return 0
    return (-(-trials // every) if every is not None else 1) + 1


def trial_estimate(matrix: Matrix) -> Callable[[Trial], float]:
    """A trial's rough seconds, the plan's clock for the canary's `minutes` (the workload's own estimate)."""
    plugin = base.get(matrix.workload)
    return lambda t: plugin.estimate_seconds(t.param_dict)


def canary_line(matrix: Matrix, trials: list[Trial], hosts: list[str], cpus: int = 1,
                estimate: Callable[[Trial], float] | None = None) -> str | None:
    """The canary: which cell, how often, how many runs it adds (pure but for the workload's estimate, which
    `estimate` replaces); None without a canary. With `minutes` the runs are counted on the trials' estimates."""
    canary = matrix.canary
    if canary is None:
        return None
    every, minutes = canary.every, canary.minutes
    if minutes is not None and estimate is None:
        estimate = trial_estimate(matrix)

    def count(host_trials: list[Trial], template: Trial, host: str) -> int:
        if minutes is None:
            return canary_runs(len(host_trials), every)
        placed = place_canaries(host_trials, template, host, every, minutes=minutes, estimate=estimate, closing=True)
        return sum(1 for t in placed if t.role == CANARY)

    names = hosts or placeholder_hosts(1)
    if matrix.placement == "each":
        templates = canary_cells(matrix, dict.fromkeys(names, cpus))
        runs = sum(count([t for t in trials if t.host == h], templates[h], h) for h in per_host(trials))
    else:  # the pool shares the trials: about an equal share each
        share = -(-len(trials) // max(1, len(names)))
        runs = count(trials[:share], canary_cells(matrix, {names[0]: cpus})[None], names[0]) * len(names)
    cell = " ".join(f"{k}={v}" for k, v in canary.cell.items())
    about = "about " if minutes is not None or (matrix.placement != "each" and len(names) > 1) else ""
    clock = ", minutes counted on the trials' estimates" if minutes is not None else ""
    return (f"canary {cell}: {canary_rule(every, minutes)} on each host: {about}{runs} more trials "
            f"(not repetitions of the cell; each reads the host's state{clock}; docs/analysis.md)")


def with_canaries(matrix: Matrix, trials: list[Trial], hosts: list[str], cpus: int,
                  estimate: Callable[[Trial], float] | None = None) -> list[Trial]:
    """The trials with the canary runs where they will run, when the order per host is known (placement each,
    or one host); else the trials as they are (pure but for the workload's estimate, as canary_line)."""
    canary = matrix.canary
    if canary is None or (matrix.placement != "each" and len(hosts) != 1):
        return trials
    if canary.minutes is not None and estimate is None:
        estimate = trial_estimate(matrix)
    templates = canary_cells(matrix, dict.fromkeys(hosts, cpus))

    def place(host_trials: list[Trial], template: Trial, host: str) -> list[Trial]:
        return place_canaries(host_trials, template, host, canary.every, minutes=canary.minutes, estimate=estimate, closing=True)

    if matrix.placement != "each":
        return place(trials, templates[None], hosts[0])
    return [t for h in hosts for t in place([t for t in trials if t.host == h], templates[h], h)]


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _plan_warnings(plugin: base.Workload, params: Mapping[str, Any]) -> list[str]:
    """The workload's warnings for one trial, given the memory its environment leaves it."""
    env = envs.get(str(params.get("env", defaults.ENV)))
    return plugin.plan_warnings(params, env.memory_limit_mib(params), env.shm_mib(params))
