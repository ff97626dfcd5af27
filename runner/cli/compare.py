"""`runner compare`: compare two campaigns cell by cell (regressions and improvements first)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from rich.console import Console

from runner.cli import datasets_default
from runner.cli.report import print_frame

EPILOG = """\
examples:
  runner compare locks-2026-01 locks-2026-02
  runner compare baseline new --metric throughput --html cmp/report.html
  runner compare /data/a /data/b --q 0.01

Cells are matched on their parameters (workload, env, accel, axes, metric). For each, the relative change of
the median (B against baseline A) with a 95% bootstrap interval and a Mann-Whitney U test; p-values are
adjusted for the number of cells with Benjamini-Hochberg, and a cell is a regression or improvement when its
q-value is at most --q (direction from the metric's higher_is_better). Use >= 5 repetitions per cell:
with fewer, no difference can be significant after the adjustment.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="compare two campaigns cell by cell", epilog=EPILOG,
        description="Compare campaign B against baseline A: change of every cell's median, with significance.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="baseline campaign (name under --datasets, or a path)")
    p.add_argument("b", help="campaign compared with the baseline")
    p.add_argument("--datasets", default=datasets_default(),
                   help="directory holding campaigns (env RUNNER_DATASETS; default: %(default)s)")
    p.add_argument("--metric", help="compare only this metric (default: all)")
    p.add_argument("--q", type=float, default=0.05, help="false discovery rate (default: %(default)s)")
    p.add_argument("--html", help="also write the comparison as an HTML page to this file")
    p.set_defaults(func=run)
    return p


def compare_campaigns(a: str, b: str, *, datasets: Path | str = "datasets", metric: str | None = None,
                      q: float = 0.05, html: Path | str | None = None, console: Console | None = None) -> pd.DataFrame:
    """Compare campaign b against a (see `runner compare --help`); print the table; return it."""
    from runner.analysis import compare, write_compare_html
    from runner.records.store import find_campaign, read_campaign

    console = console or Console()
    da, db = find_campaign(a, Path(datasets)), find_campaign(b, Path(datasets))
    ma, _, _ = read_campaign(da)
    mb, _, _ = read_campaign(db)
    result = compare(ma, mb, metric=metric, q=q)
    shown = result.drop(columns=[c for c in ("campaign", "higher_is_better") if c in result.columns])
    shown = shown[[c for c in shown.columns if shown[c].nunique(dropna=False) > 1 or c in ("metric", "verdict", "change")]]
    counts = result["verdict"].value_counts()
    print_frame(console, shown, title=f"{db.name} against {da.name}: "
                + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("regression", "improvement", "same")))
    if html:
        path = write_compare_html(result, html, title=f"{db.name} against {da.name}", q=q)
        console.print(f"comparison: {path}")
    return result


def run(args: argparse.Namespace) -> int:
    compare_campaigns(args.a, args.b, datasets=args.datasets, metric=args.metric, q=args.q, html=args.html)
    return 0
