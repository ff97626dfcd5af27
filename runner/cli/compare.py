"""`runner compare`: compare two campaigns cell by cell (regressions and improvements first)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from runner.cli import datasets_default, number_between
from runner.cli.report import check_choice, print_frame
from runner.errors import UsageError

EPILOG = """\
examples:
  runner compare locks-2026-01 locks-2026-02
  runner compare baseline new --metric throughput --html cmp/report.html
  runner compare /data/a /data/b --q 0.01
  runner compare lockbench-scaling --vary lock=ticket,oticket     two variants of one campaign

Cells are matched on their parameters (workload, env, accel, axes, metric); canary runs are left out. For each, the relative change of
the median (B against baseline A) with a 95% bootstrap interval and a Mann-Whitney U test; p-values are
adjusted for the number of cells with Benjamini-Hochberg, and a cell is a regression or improvement when its
q-value is at most --q (direction from the metric's higher_is_better). Use >= 5 repetitions per cell:
with fewer, no difference can be significant after the adjustment.

Warnings follow the table when the two sides are not comparable: their hosts differ in a fact taken at
launch (CPU model, kernel, command line, SMT, turbo, governor, ...), or the host state read batch by batch
(the canary's host_state: governor, turbo, NUMA balancing, irqbalance, other processes' load, throttling)
differs between the sides or within one.
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
    p.add_argument("--q", type=number_between(0, 1), default=0.05,
                   help="false discovery rate, between 0 and 1 (default: %(default)s)")
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
    from runner.analysis.drift import Side, comparability_warnings
    from runner.analysis.stats import axis_columns

    if not 0 < q < 1:
        raise UsageError(f"--q {q}: out of range; allowed: a number greater than 0 and less than 1")
    da = find_campaign(a, Path(datasets))
    ma, ta, pa = read_campaign(da)
    if vary:
        axis, _, values = vary.partition("=")
        base, _, other = values.partition(",")
        if not (axis and base and other) or b is not None:
            raise UsageError(f"--vary {vary!r}: expected AXIS=BASE,OTHER (e.g. lock=ticket,oticket) and one campaign")
        check_choice("--vary", axis, axis_columns(ma), f"the axes of campaign {da.name}")
        _check_metric(metric, ma, da.name)
        value_a, value_b = axis_value(ma, axis, base), axis_value(ma, axis, other)
        result = compare_variants(ma, axis, value_a, value_b, metric=metric, q=q)
        label_a, label_b = f"{da.name} {axis}={base}", f"{axis}={other}"
        ids_a, ids_b = (frozenset(ma.loc[(ma[axis] == v).to_numpy(), "trial_id"]) for v in (value_a, value_b))
        warnings = comparability_warnings(Side(ma, ta, pa.get("hosts") or {}, ids_a), Side(ma, ta, pa.get("hosts") or {}, ids_b),
                                          label_a, label_b)
    else:
        if b is None:
            raise UsageError("runner compare needs two campaigns, or one campaign and --vary AXIS=BASE,OTHER")
        db = find_campaign(b, Path(datasets))
        mb, tb, pb = read_campaign(db)
        _check_metric(metric, ma, da.name, mb, db.name)
        result = compare(ma, mb, metric=metric, q=q)
        label_a, label_b = da.name, db.name
        warnings = comparability_warnings(Side(ma, ta, pa.get("hosts") or {}), Side(mb, tb, pb.get("hosts") or {}), label_a, label_b)
    result.attrs["warnings"] = list(warnings)
    shown = result.drop(columns=[c for c in ("campaign", "higher_is_better") if c in result.columns])
    shown = shown[[c for c in shown.columns if shown[c].nunique(dropna=False) > 1 or c in ("metric", "verdict", "change")]]
    counts = result["verdict"].value_counts()
    print_frame(console, shown, title=f"{label_b} against {label_a}: "
                + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("regression", "improvement", "same")))
    for line in warnings:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if html:
        try:
            path = write_compare_html(result, html, title=f"{label_b} against {label_a}", q=q, warnings=warnings)
        except OSError as exc:
            raise UsageError(f"--html {html}: cannot write: {exc.strerror or exc}") from None
        console.print(f"comparison: {path}")
    return result


def _check_metric(metric: str | None, ma: pd.DataFrame, name_a: str, mb: pd.DataFrame | None = None, name_b: str = "") -> None:
    """--metric must be a metric both sides have: UsageError naming the allowed ones."""
    if metric is None:
        return
    both = set(map(str, ma["metric"].dropna().unique()))
    if mb is not None:
        both &= set(map(str, mb["metric"].dropna().unique()))
    check_choice("--metric", metric, sorted(both), f"campaign {name_a}" + (f" and {name_b}" if mb is not None else ""))


def axis_value(metrics: pd.DataFrame, axis: str, text: str) -> object:
    """The value of `axis` in the data that `text` (from --vary) names: by its text, or as the same number, or
    the same boolean; UsageError listing the values otherwise (never a traceback for 'abc' on an int axis)."""
    values = list(metrics[axis].dropna().unique())
    for v in values:
        if str(v) == text or (isinstance(v, (bool, np.bool_)) and str(bool(v)).lower() == text.strip().lower()):
            return v.item() if hasattr(v, "item") else v
    try:
        number = float(text)
    except ValueError:
        number = None
    for v in values:
        if number is not None and not isinstance(v, (bool, np.bool_, str)) and float(v) == number:
            return v.item() if hasattr(v, "item") else v
    known = ", ".join(sorted(map(str, values))) or "(none)"
    raise UsageError(f"--vary: no {axis}={text} in the data; allowed values of {axis}: {known}")


def run(args: argparse.Namespace) -> int:
    compare_campaigns(args.a, args.b, vary=args.vary, datasets=args.datasets, metric=args.metric, q=args.q, html=args.html)
    return 0
