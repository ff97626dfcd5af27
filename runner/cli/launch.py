"""runner launch: run (or resume) a campaign."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from runner.cli import add_datasets_option, add_group_option, add_inventory_option, add_known_hosts_option, datasets_hint, exit_status, known_hosts_default, on_group
from runner.execution.cluster import prestart

if TYPE_CHECKING:
    from runner.execution import campaign

HELP = """\
Run every trial of a matrix on its hosts and write the results to datasets/<campaign>/ (Parquet).

Trials run through Dask: a local cluster by default, or an existing scheduler (--scheduler). Each host
runs one trial at a time; hosts run in parallel. Failed trials are retried as the matrix's `retry` says
and every attempt is recorded. Launching the same matrix again resumes: finished trials are skipped.
Ctrl-C stops running workloads and keeps everything measured so far.

With --scheduler, workers may come and go: trials left waiting for a worker that left are sent to the
workers there are now. RUNNER_WORKER_WAIT (seconds, default 30): how long to wait when the scheduler has
no worker at all. RUNNER_STALL_AFTER (seconds, default 60): no trial started or finished for that long
while trials are pending, and the progress output says why. A lost hold on a host (confirmed on the host
by every trial's first command) stops new trials there. See docs/hosts.md.

examples:
  runner launch matrix.yml
  runner launch matrix.yml --scheduler tcp://127.0.0.1:8786    a long-lived lab scheduler
  runner launch matrix.yml --known-hosts ~/.ssh/known_hosts_lab  host keys of the lab (docs/hosts.md)
  RUNNER_DATASETS=/data/campaigns runner launch matrix.yml
  runner launch examples/study.yml --inventory /tmp/vmbed/hosts.yml --group vmhosts   on another inventory's group
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("launch", help="run or resume a campaign", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=exit_status("0    every trial succeeded", "1    some trials failed, or something else failed"))
    p.add_argument("matrix", type=Path, help="matrix file (YAML)")
    add_datasets_option(p, "where datasets go")
    p.add_argument("--scheduler", default=os.environ.get("RUNNER_SCHEDULER"), help="Dask scheduler address, e.g. tcp://HOST:8786 (env RUNNER_SCHEDULER; default: a local cluster)")
    add_inventory_option(p, "the matrix's, else inventory/ beside it, else the project's")
    add_group_option(p)
    add_known_hosts_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = launch_matrix(args.matrix, datasets=args.datasets, scheduler=args.scheduler, inventory=args.inventory, quiet=args.quiet,
                            known_hosts=args.known_hosts, group=args.group)
    return 0 if summary.success else (130 if summary.interrupted else 1)


def launch_matrix(
    matrix_path: Path,
    *,
    datasets: Path,
    scheduler: str | None = None,
    inventory: str | None = None,
    quiet: bool = False,
    known_hosts: Path | None = None,
    group: str | None = None,
) -> campaign.Summary:
    """What `runner launch` does. `known_hosts` None: RUNNER_KNOWN_HOSTS, else the inventory's (scheduled
    runs call this without argv)."""
    prestart(scheduler)  # the local cluster's worker processes start importing while this one imports the rest
    from runner.execution import campaign  # after prestart, on purpose (see above): half a second of imports
    from runner.matrix.load import load_matrix

    matrix = on_group(load_matrix(matrix_path), group)
    known_hosts = known_hosts or known_hosts_default()
    hosts = campaign.resolve_hosts(matrix, inventory, known_hosts)
    console = Console(stderr=True)
    view = _TerminalView(console) if console.is_terminal and not quiet else _LineView(console, quiet)
    try:
        summary = campaign.launch(
            matrix, datasets=Path(datasets), hosts=hosts, scheduler=scheduler, on_progress=view.update, command_line=sys.argv,
            inventory=inventory, known_hosts=known_hosts,
        )
    finally:
        view.close()
    print_summary(Console(), summary, datasets)
    return summary


class _TerminalView:
    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[running]}"),
            console=console,
            transient=False,
        )
        self.task = None
        self.seen = 0
        self.bar.start()

    def update(self, p: campaign.Progress) -> None:
        counts = f"[green]{p.done} ok[/] [red]{p.failed} failed[/] {p.remaining} left" + (f" round {p.round}" if p.round else "")
        running = "  ".join(f"{h}: {label}" for h, label in sorted(p.running.items()))[:80]
        if p.total == 0:  # a note before the campaign starts (e.g. waiting for a busy host)
            for msg in p.messages:
                self.bar.console.print(f"[yellow]{msg}")
            return
        eta = _clock(p.eta_s())
        if self.task is None:
            self.task = self.bar.add_task("trials", total=p.total, completed=p.skipped, counts=counts, running=running, eta=eta)
        self.bar.update(self.task, total=p.total, completed=p.skipped + p.done + p.failed, counts=counts, running=running, eta=eta)
        for msg in p.messages[self.seen :]:
            self.bar.console.print(f"[yellow]{msg}")
        self.seen = len(p.messages)

    def close(self) -> None:
        self.bar.stop()


def _clock(seconds: float) -> str:
    """H:MM:SS, as the elapsed time beside it."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _LineView:
    """Without a terminal (CI, logs): a line each time a trial ends, at most one per second otherwise."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.last = (-1, -1)
        self.seen = 0

    def update(self, p: campaign.Progress) -> None:
        if p.total == 0:  # a note before the campaign starts (e.g. waiting for a busy host)
            for msg in p.messages:
                self.console.print(f"runner: {msg}", highlight=False)
            return
        for msg in p.messages[self.seen :]:
            self.console.print(f"runner: {msg}", highlight=False)
        self.seen = len(p.messages)
        key = (p.done, p.failed)
        if self.quiet or key == self.last:
            return
        self.last = key
        elapsed = time.monotonic() - p.started
        finished = p.done + p.failed
        eta = p.eta_s()
        self.console.print(
            f"trials {p.skipped + finished}/{p.total}{f' (round {p.round})' if p.round else ''}: {p.done} ok, {p.failed} failed, {p.remaining} left; "
            f"elapsed {elapsed:.0f}s, eta {eta:.0f}s",
            highlight=False,
        )

    def close(self) -> None:
        pass


def print_summary(console: Console, s: campaign.Summary, datasets: Path | str | None = None) -> None:
    """The end of a launch; its hints name --datasets when the user's is not the default (they can be followed)."""
    more = datasets_hint(datasets)
    state = "interrupted" if s.interrupted else ("done" if s.success else "done with failures")
    console.print(f"[bold]{s.campaign}[/]: {state} in {s.elapsed_s:.1f}s")
    console.print(
        f"  {s.planned} trials planned, {s.skipped} already recorded, {s.ok} ok now, {s.failed} failed "
        f"({s.attempts} attempts)"
    )
    for host in s.dead_hosts:
        console.print(f"  [red]host {host} was unreachable[/]")
    for line in s.lost_holds:
        console.print(f"  [red]{line}: no trial started there after that[/]", highlight=False)
    for line in s.host_changes:
        console.print(f"  [yellow]{line}[/]", highlight=False)
    for line in s.failures[:10]:
        console.print(f"  [red]failed[/] {line}", highlight=False)
    if len(s.failures) > 10:
        console.print(f"  ... {len(s.failures) - 10} more: runner status {s.campaign}{more}")
    console.print(f"  dataset: {s.dataset}")
    if s.interrupted or s.failed:
        console.print("  resume with the same `runner launch` command: finished trials are skipped")
    console.print(f"  next: runner report {s.campaign}{more}")
