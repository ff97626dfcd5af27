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
  runner compare lockbench-scaling --vary lock=ticket,oticket     two variants of one campaign

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
    p.add_argument("b", nargs="?", help="campaign compared with the baseline (omit with --vary)")
    p.add_argument("--vary", metavar="AXIS=BASE,OTHER",
                   help="compare two values of one axis within campaign A, e.g. lock=ticket,oticket")
    p.add_argument("--datasets", default=datasets_default(),
                   help="directory holding campaigns (env RUNNER_DATASETS; default: %(default)s)")
    p.add_argument("--metric", help="compare only this metric (default: all)")
    p.add_argument("--q", type=float, default=0.05, help="false discovery rate (default: %(default)s)")
    p.add_argument("--html", help="also write the comparison as an HTML page to this file")
    p.set_defaults(func=run)
    return p


def compare_campaigns(a: str, b: str | None, *, vary: str | None = None, datasets: Path | str = "datasets", metric: str | None = None,
                      q: float = 0.05, html: Path | str | None = None, console: Console | None = None) -> pd.DataFrame:
    """Compare campaign b against a (see `runner compare --help`); print the table; return it."""
    from runner.analysis import compare, write_compare_html
    from runner.records.store import find_campaign, read_campaign

    console = console or Console()
    from runner.analysis import compare_variants
    from runner.errors import UsageError

    da = find_campaign(a, Path(datasets))
    ma, _, _ = read_campaign(da)
    if vary:
        axis, _, values = vary.partition("=")
        base, _, other = values.partition(",")
        if not (axis and base and other) or b is not None:
            raise UsageError(f"--vary {vary!r}: expected AXIS=BASE,OTHER (e.g. lock=ticket,oticket) and one campaign")
        kinds = ma[axis].dropna() if axis in ma.columns else None
        cast = type(kinds.iloc[0].item()) if kinds is not None and len(kinds) and hasattr(kinds.iloc[0], "item") else str
        result = compare_variants(ma, axis, cast(base), cast(other), metric=metric, q=q)
        label_a, label_b = f"{da.name} {axis}={base}", f"{axis}={other}"
    else:
        if b is None:
            raise UsageError("runner compare needs two campaigns, or one campaign and --vary AXIS=BASE,OTHER")
        db = find_campaign(b, Path(datasets))
        mb, _, _ = read_campaign(db)
        result = compare(ma, mb, metric=metric, q=q)
        label_a, label_b = da.name, db.name
    shown = result.drop(columns=[c for c in ("campaign", "higher_is_better") if c in result.columns])
    shown = shown[[c for c in shown.columns if shown[c].nunique(dropna=False) > 1 or c in ("metric", "verdict", "change")]]
    counts = result["verdict"].value_counts()
    print_frame(console, shown, title=f"{label_b} against {label_a}: "
                + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("regression", "improvement", "same")))
    if html:
        path = write_compare_html(result, html, title=f"{label_b} against {label_a}", q=q)
        console.print(f"comparison: {path}")
    return result


def run(args: argparse.Namespace) -> int:
    compare_campaigns(args.a, args.b, vary=args.vary, datasets=args.datasets, metric=args.metric, q=args.q, html=args.html)
    return 0
