"""runner schedule: campaigns that run on a cron schedule, each run a new dated campaign instance."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from croniter import croniter
from rich.console import Console
from rich.table import Table

from runner.cli import add_datasets_option, add_inventory_option
from runner.cli.launch import launch_matrix
from runner.errors import UsageError
from runner.lab import schedule as sched_mod

HELP = """\
Run a matrix on a cron schedule. Every slot is a new campaign instance named after the matrix's campaign
and the slot, e.g. `locks-20261126T0200`, with its own dataset; running a slot again resumes it.

On a machine run by systemd, `add` installs and starts a timer (OnCalendar from the cron expression,
Persistent=true: a slot missed while the machine was off runs once at boot). Elsewhere, keep
`runner serve` running: it runs the schedules, and a missed slot once when it comes back.

Schedules are kept in $RUNNER_HOME/schedules.yml (default ~/.config/runner).

examples:
  runner schedule add nightly matrix.yml --cron "0 2 * * *"
  runner schedule list
  runner schedule run-now nightly        a new instance now, in the foreground
  runner schedule remove nightly
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("schedule", help="run campaigns on a cron schedule", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a schedule", description="Add a schedule: NAME runs MATRIX at every slot of CRON.")
    add.add_argument("name", help="schedule name (letters, digits, _ -)")
    add.add_argument("matrix", type=Path, help="matrix file (YAML); read again at every run")
    add.add_argument("--cron", required=True, help='cron expression in local time, e.g. "0 2 * * *" (minute hour day month weekday)')
    add_datasets_option(add, "where the instances' datasets go")
    add_inventory_option(add, "as `runner launch MATRIX` from here would use")
    add.add_argument("--no-systemd", action="store_true", help="do not install a systemd timer even where systemd runs; use `runner serve`")
    sub.add_parser("list", help="the schedules, their next slot and last run")
    rm = sub.add_parser("remove", help="remove a schedule (and its systemd timer)")
    rm.add_argument("name")
    now = sub.add_parser("run-now", help="run a schedule now, in the foreground")
    now.add_argument("name")
    now.add_argument("--latest-slot", action="store_true", help="run (or resume) the latest slot instead of a new instance for now (what the systemd timer runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True)
    if args.action == "add":
        s = sched_mod.add_schedule(
            args.name, args.matrix, args.cron, datasets=args.datasets, inventory=args.inventory, use_systemd=False if args.no_systemd else None
        )
        how = f"systemd timer {sched_mod.UNIT_PREFIX}{s.name}.timer" if s.mode == "systemd" else "`runner serve` (no systemd here: keep it running)"
        console.print(f"schedule {s.name}: {s.matrix} at '{s.cron}', run by {how}", highlight=False)
        return 0
    if args.action == "list":
        return list_schedules(console)
    if args.action == "remove":
        datasets = sched_mod.remove_schedule(args.name)
        console.print(f"schedule {args.name} removed (its datasets are kept in {datasets})", highlight=False)
        return 0
    s = sched_mod.get_schedule(args.name)
    now = datetime.now().astimezone()
    slot = sched_mod.latest_slot(s.cron, now) if args.latest_slot else now.replace(second=0, microsecond=0)
    summary = sched_mod.run_slot(s, slot, launch_matrix, quiet=False)
    return 0 if summary.success else (130 if summary.interrupted else 1)


def list_schedules(console: Console) -> int:
    """The table of good schedules; each bad entry or state file as one line on stderr, and then exit status 2."""
    problems: list[str] = []
    table = Table("name", "cron", "matrix", "mode", "next slot", "last slot run", show_edge=False)
    now = datetime.now().astimezone()
    for s in sched_mod.load_schedules(problems=problems).values():
        try:
            last = sched_mod.last_run(s.name)
            shown = last.isoformat(timespec="minutes") if last else "never"
        except UsageError as exc:
            problems.append(f"schedule {s.name}: {exc}")
            shown = "unknown"
        nxt = croniter(s.cron, now).get_next(datetime)
        table.add_row(s.name, s.cron, s.matrix, s.mode, nxt.isoformat(timespec="minutes"), shown)
    console.print(table)
    for line in problems:
        print(f"runner: {line}", file=sys.stderr)
    return 2 if problems else 0
