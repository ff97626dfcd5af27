"""`runner report`: build the HTML report of a campaign and print the median and spread of every cell."""

from __future__ import annotations

import argparse
import io
import json
import os
import webbrowser
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from runner import analysis  # its names load their modules on first use (matplotlib and scipy: the report's)
from runner.analysis.fmt import number
from runner.analysis.stats import axis_columns
from runner.cli import add_datasets_option, add_json_option, int_at_least
from runner.errors import BadDatasetError, UsageError
from runner.records.store import find_campaign, read_campaign
from runner.staging import staged_output
from runner.workloads.base import scaling_metrics

EPILOG = """\
examples:
  runner report                          # the most recent campaign under datasets/
  runner report locks-2026               # datasets/locks-2026, report in reports/locks-2026/
  runner report /data/old/locks --out /tmp/r --open
  runner report locks-2026 --axis vcpus --bootstrap 1000
  runner report locks-2026 --json > summary.json   # the same report; stdout: every cell's median and spread

The report (report.html, PNG figures in img/, summary.csv) shows each metric against the load axis with
its spread; for the metrics that scale like a throughput (the workload says which: lockbench's throughput,
gmake's builds_per_hour) also speedup and efficiency, a Universal Scalability Law fit per slice with 95%
intervals and collapse points; over-commit efficiency and fairness, provenance, and warnings when results
are not comparable (hosts that differ, TCG emulation instead of KVM, cells whose spread needs more
repetitions). A --metric or --axis the campaign does not have is refused with the allowed values.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="build the HTML report of a campaign", epilog=EPILOG,
        description="Analyse a campaign's dataset and write an HTML report; print the median of every cell.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaign", nargs="?", help="campaign name under --datasets, or a path (default: most recent)")
    add_datasets_option(p)
    p.add_argument("--out", help="report directory (default: reports/<campaign>)")
    p.add_argument("--axis", help="load axis (default: the first of threads, cores, vcpus with 2+ values)")
    p.add_argument("--metric",
                   help="metric of the terminal table, or 'all' (default: throughput if the campaign has it, else all)")
    p.add_argument("--bootstrap", type=int_at_least(0, 100_000), default=200,
                   help="bootstrap replicates per fit (default: %(default)s)")
    p.add_argument("--open", action="store_true", help="open the report in a web browser")
    add_json_option(p, "the summary (every cell's median and spread, and the report's path) instead of the table")
    p.set_defaults(func=run)
    return p


def print_frame(console: Console, df: pd.DataFrame, *, title: str, max_rows: int = 40, whole: Sequence[str] = ()) -> None:
    """Print a DataFrame as a rich table (first max_rows rows; numbers for people: runner.analysis.fmt); the
    columns in `whole` (a cell's key: its axes) keep their whole header and values, never cut with an ellipsis."""
    table = Table(title=title, show_lines=False)
    for c in df.columns:
        wide = max([len(str(c)), *(len(number(v)) for v in df[c].head(max_rows))]) if c in whole else None
        table.add_column(str(c), justify="right" if pd.api.types.is_numeric_dtype(df[c]) else "left", min_width=wide)
    for row in df.head(max_rows).itertuples(index=False):
        table.add_row(*(number(v) for v in row))
    console.print(table)
    if len(df) > max_rows:
        console.print(f"... {len(df) - max_rows} more rows")


def check_choice(option: str, value: str, allowed: list[str], where: str) -> None:
    """UsageError naming the option, the value and the allowed values, when `value` is not one of them."""
    if value not in allowed:
        raise UsageError(f"{option} {value!r}: not in {where}; allowed: {', '.join(allowed) or '(none)'}")


def load_axes(metrics: pd.DataFrame) -> list[str]:
    """Axis columns of a metrics table that can be a load axis: numeric ones."""
    return [c for c in axis_columns(metrics) if pd.api.types.is_numeric_dtype(metrics[c])]


def check_out_dir(out_dir: Path) -> None:
    """--out is a directory or can be made one, checked without making anything: the nearest existing path is a
    directory this process may write in; else one UsageError naming the option and the path in the way."""
    there = out_dir
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise UsageError(f"--out {out_dir}: cannot make the report directory: {there} is not a directory")
    if not os.access(there, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: cannot make the report directory: {there}: permission denied")


def report(campaign: str | None = None, *, datasets: Path | str = "datasets", out: Path | str | None = None,
           axis: str | None = None, bootstrap: int = 200, metric: str | None = None,
           console: Console | None = None) -> Path:
    """Build the report of a campaign (see `runner report --help`); print its cell table; return report.html.
    A metric or axis the campaign does not have is refused (UsageError naming the option and what is allowed)."""
    console = console or Console()
    cdir = find_campaign(campaign, Path(datasets))
    metrics, trials, provenance = read_campaign(cdir)
    present = sorted(map(str, metrics["metric"].dropna().unique()))
    if metric is not None:
        check_choice("--metric", metric, ["all", *present], f"campaign {cdir.name}")
    if axis is not None:
        check_choice("--axis", axis, load_axes(metrics), f"the numeric axes of campaign {cdir.name}")
    if not analysis.totals(metrics)["value"].notna().any():  # checked before --out is made: a refusal leaves nothing behind
        raise BadDatasetError(f"{cdir}: the metrics table has no total rows (thread and vm null) to report")
    out_dir = Path(out) if out else Path("reports") / cdir.name
    check_out_dir(out_dir)  # made by build_report, after its own checks: a refused report leaves nothing behind
    with staged_output(out_dir) as stage:  # a full disk or Ctrl-C leaves no partial report (an earlier one intact)
        staged = analysis.build_report(metrics, trials, provenance, stage, axis=axis, bootstrap=bootstrap,
                              scaling_metrics=scaling_metrics())
    path = out_dir / staged.relative_to(stage)
    stats = ["n", "median", "rel_iqr", "reps_needed"]
    stats += [f"stat_{c}" for c in stats]  # a statistic beside an axis of its name (runner.analysis.axes)
    table = analysis.summary_table(metrics, trials=trials)  # every axis, guest_kernel too, under its own name
    metric = metric or ("throughput" if "throughput" in present else "all")
    if metric != "all":  # one metric: named in the title, its column left out (room for the axes at 80 columns)
        table = table[table["metric"] == metric].drop(columns=["metric"])
    keep = [c for c in table.columns if c not in ("campaign", "unit", "q1", "q3", "iqr", "ci_rel", "wide")
            and table[c].nunique(dropna=False) > 1 or c in [*stats, "metric"]]
    what = "every cell" if metric == "all" else f"{metric} in every cell"
    print_frame(console, table[keep], title=f"{cdir.name}: median of {what} (rel_iqr = IQR / median; reps_needed for a 5% interval)",
                whole=[c for c in keep if c not in stats and c != "metric"])
    console.print(f"report: {path}")
    return path


def print_json(args: argparse.Namespace) -> int:
    """--json: the report is built as without it; stdout gets one JSON document (the summary and its path)."""
    path = report(args.campaign, datasets=args.datasets, out=args.out, axis=args.axis, bootstrap=args.bootstrap,
                  metric=args.metric, console=Console(file=io.StringIO()))
    cdir = find_campaign(args.campaign, Path(args.datasets))
    metrics, trials, _ = read_campaign(cdir)
    table = analysis.summary_table(metrics, trials=trials)  # every axis, guest_kernel too, under its own name
    if args.metric not in (None, "all"):
        table = table[table["metric"] == args.metric]
    doc = {"campaign": cdir.name, "report": str(path), "cells": json.loads(table.to_json(orient="records"))}
    print(json.dumps(doc, indent=2))
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return 0


def run(args: argparse.Namespace) -> int:
    if args.json:
        return print_json(args)
    path = report(args.campaign, datasets=args.datasets, out=args.out, axis=args.axis, bootstrap=args.bootstrap,
                  metric=args.metric)
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return 0
