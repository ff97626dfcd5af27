"""`runner compare`: compare two campaigns cell by cell (worse cells first, then better ones)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from runner.analysis.drift import Side, comparability_warnings
from runner.analysis.stats import axis_columns
from runner.cli import add_datasets_option, add_json_option, exit_status, number_between
from runner.cli.report import check_choice
from runner.errors import UsageError
from runner.records.store import find_campaign, read_campaign

EPILOG = """\
examples:
  runner compare locks-2026-01 locks-2026-02
  runner compare baseline new --metric throughput --html cmp/report.html
  runner compare /data/a /data/b --q 0.01
  runner compare lockbench-scaling --vary lock=ticket,oticket     two variants of one campaign
  runner compare baseline new --fail-on regression                  in CI: exit 3 when a cell got worse
  runner compare baseline new --json | jq '.cells[] | select(.verdict == "worse")'

Cells are matched on their parameters (workload, env, accel, axes, metric); canary runs are left out. For
each, the change of the median (B against baseline A) in percent with a 95% bootstrap interval, and a
Mann-Whitney U test; p-values are adjusted for the number of cells with Benjamini-Hochberg. Every cell gets
a verdict: worse or better (q-value at most --q and an interval that excludes 0; the direction is the
metric's higher_is_better, `changed` when the metric has none), not significant, or too few (its
repetitions cannot show a difference whatever the data: at 3 against 3 the smallest possible p is 0.1).
Use >= 5 repetitions per cell.

Warnings follow the table when the two sides are not comparable: a parameter or its values that only one
side has, fixed parameters, the workload or runner versions that differ; hosts that differ in a fact taken
at launch (CPU model, kernel, command line, SMT, turbo, governor, ...), or the host state read batch by
batch (the canary's host_state) that differs between the sides or within one.
"""

REGRESSION_FOUND = 3  # exit status of --fail-on when it found what it fails on


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="compare two campaigns cell by cell", epilog=EPILOG,
        description="Compare campaign B against baseline A: change of every cell's median, with significance.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.epilog += "\n" + exit_status(f"{REGRESSION_FOUND}    --fail-on found a worse cell (regression) or any significant change (change)")
    p.add_argument("a", help="baseline campaign (name under --datasets, or a path)")
    p.add_argument("b", nargs="?", help="campaign compared with the baseline (omit with --vary)")
    p.add_argument("--vary", metavar="AXIS=BASE,OTHER",
                   help="compare two values of one axis within campaign A, e.g. lock=ticket,oticket")
    add_datasets_option(p)
    p.add_argument("--metric", help="compare only this metric (default: all)")
    p.add_argument("--q", type=number_between(0, 1), default=0.05,
                   help="false discovery rate, between 0 and 1 (default: %(default)s)")
    p.add_argument("--html", metavar="FILE", help="also write the comparison as an HTML page (table and figure) to this file")
    p.add_argument("--fail-on", choices=("regression", "change"),
                   help=f"exit {REGRESSION_FOUND} when a cell is worse (regression) or significantly different either way (change), for CI")
    add_json_option(p, "the comparison (every cell with its change and interval in percent, verdict, warnings)")
    p.set_defaults(func=run)
    return p


def compare_campaigns(a: str, b: str | None, *, vary: str | None = None, datasets: Path | str = "datasets", metric: str | None = None,
                      q: float = 0.05, html: Path | str | None = None, console: Console | None = None,
                      as_json: bool = False) -> pd.DataFrame:
    """Compare campaign b against a (see `runner compare --help`); print the table (or with `as_json` the JSON
    document); return it, with the warnings in .attrs["warnings"]."""
    # Here, not at the top: the comparisons import scipy and the page matplotlib (a second), and `runner --help`
    # imports every command's module.
    from runner.analysis import compare, compare_variants, write_compare_html
    from runner.analysis.comparison import parameter_warnings, version_warnings

    console = console or Console()

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
        warnings = (parameter_warnings(ma, mb, label_a, label_b) + version_warnings(pa, pb, label_a, label_b)
                    + comparability_warnings(Side(ma, ta, pa.get("hosts") or {}), Side(mb, tb, pb.get("hosts") or {}), label_a, label_b))
    result.attrs["warnings"] = list(warnings)
    title = f"{label_b} against {label_a}"
    if as_json:
        print(json.dumps(compare_json(result, label_a, label_b, q), indent=2))
    else:
        print_comparison(console, result, title)
        for line in warnings:
            console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if html:
        try:
            path = write_compare_html(result, html, title=title, q=q, warnings=warnings)
        except OSError as exc:
            raise UsageError(f"--html {html}: cannot write: {exc.strerror or exc}") from None
        if not as_json:
            console.print(f"comparison: {path}")
    return result


def _pct(fraction: float) -> float | None:
    return None if fraction is None or not math.isfinite(fraction) else round(100 * fraction, 3)


def compare_json(result: pd.DataFrame, label_a: str, label_b: str, q: float) -> dict[str, object]:
    """What `runner compare --json` prints: changes in percent, one object per cell (pure)."""
    from runner.analysis.comparison import cell_keys, counts  # scipy: see compare_campaigns

    keys = [c for c in cell_keys(result) if c != "metric"]
    cells = []
    for _, r in result.iterrows():
        hib = r.get("higher_is_better")
        cells.append({
            "metric": r["metric"], "params": {k: _plain(r[k]) for k in keys if pd.notna(r[k])}, "unit": r.get("unit") or None,
            "higher_is_better": None if hib is None or pd.isna(hib) else bool(hib),
            "n_a": int(r["n_a"]), "n_b": int(r["n_b"]), "median_a": float(r["median_a"]), "median_b": float(r["median_b"]),
            "change_pct": _pct(r["change"]), "change_low_pct": _pct(r["change_low"]), "change_high_pct": _pct(r["change_high"]),
            "p": None if pd.isna(r["p"]) else float(r["p"]), "q": None if pd.isna(r["q"]) else float(r["q"]),
            "verdict": r["verdict"], "why": r["why"],
        })
    return {"a": label_a, "b": label_b, "q": q, "counts": counts(result), "warnings": list(result.attrs.get("warnings", [])),
            "cells": cells}


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


def print_comparison(console: Console, result: pd.DataFrame, title: str, max_rows: int = 40) -> None:
    """The comparison for a terminal of 80 columns: the cell in words (folded when long), n, the change with its
    interval in percent, q and the verdict; the reason for `too few` once, under the table."""
    from runner.analysis.compare_page import cell_label, varying_keys  # scipy: see compare_campaigns
    from runner.analysis.comparison import TOO_FEW, counts, percent

    keys = varying_keys(result)
    table = Table(title=f"{title}: " + ", ".join(f"{n} {v}" for v, n in counts(result).items() if n),
                  show_edge=False, pad_edge=False, title_justify="left")
    table.add_column("cell", overflow="fold", ratio=1)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("change [95% interval]", justify="right", no_wrap=True)
    table.add_column("q", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    colors = {"worse": "red", "better": "green"}
    for _, r in result.head(max_rows).iterrows():
        v = r["verdict"]
        change = f"{percent(r['change'])} [{percent(r['change_low'], 0)}, {percent(r['change_high'], 0)}]"
        table.add_row(cell_label(r, keys), f"{r['n_a']}/{r['n_b']}", change, "-" if pd.isna(r["q"]) else f"{r['q']:.2g}",
                      f"[{colors[v]}]{v}[/]" if v in colors else v)
    console.print(table)
    if len(result) > max_rows:
        console.print(f"... {len(result) - max_rows} more cells (--json or --html lists all)")
    for why in dict.fromkeys(result.loc[result["verdict"] == TOO_FEW, "why"]):
        console.print(f"too few: {why}", highlight=False)


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
    result = compare_campaigns(args.a, args.b, vary=args.vary, datasets=args.datasets, metric=args.metric, q=args.q,
                               html=args.html, as_json=args.json)
    return REGRESSION_FOUND if fails(result, args.fail_on) else 0


def fails(result: pd.DataFrame, fail_on: str | None) -> bool:
    """Whether --fail-on finds what it fails on: a worse cell (regression), or any significant change (pure)."""
    from runner.analysis.comparison import BETTER, CHANGED, WORSE  # scipy: see compare_campaigns

    if fail_on is None:
        return False
    bad = {WORSE} if fail_on == "regression" else {WORSE, BETTER, CHANGED}
    return bool(result["verdict"].isin(bad).any())
