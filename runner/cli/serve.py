"""runner serve: run the schedules in the foreground (machines without systemd)."""

from __future__ import annotations

import argparse

from rich.console import Console

from runner.cli.launch import launch_matrix
from runner.lab import schedule as sched_mod

HELP = """\
Run the schedules of $RUNNER_HOME/schedules.yml (see `runner schedule`) in the foreground, for machines
without systemd. Each due slot runs as a new dated campaign instance. Slots missed while `serve` was not
running are run once, for the latest of them, when it starts again; an instance interrupted half-way
is resumed by running its slot again. The schedules file is re-read at least every minute.

examples:
  runner serve                 until Ctrl-C
  runner serve --once          run what is due now, then exit (e.g. from cron itself)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run scheduled campaigns in the foreground", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--once", action="store_true", help="run what is due now and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    ran = sched_mod.serve(launch_matrix, once=args.once, on_run=lambda msg: console.print(f"runner serve: {msg}", highlight=False))
    if args.once and not ran:
        console.print("runner serve: nothing due", highlight=False)
    return 0
