"""`runner fit`: fit the Universal Scalability Law (or Amdahl's law) to two columns of a CSV file."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

from runner.analysis.fmt import fitted
from runner.analysis.usl import UslFit, fit_usl
from runner.cli import int_at_least
from runner.errors import DatasetError, UsageError
from runner.textfile import MAX_CSV_BYTES, read_text

EPILOG = """\
examples:
  runner fit usl --csv runs.csv --x threads --y throughput
  runner fit amdahl --csv runs.csv --x cores --y builds_per_hour --bootstrap 2000
  runner fit usl --csv runs.csv --x threads --y throughput --json > fit.json

One row per measurement; repeated loads are repetitions (the bootstrap resamples them within each load).
The model is X(N) = gamma N / (1 + sigma (N-1) + kappa N (N-1)): sigma is contention, kappa coherency
(kappa = 0 is Amdahl), and the peak is at N* = sqrt((1 - sigma) / kappa). A fit is flagged poor when R^2 is
low or the curve misses a load's median badly (a sudden collapse is not USL-shaped: see runner report).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit", help="fit a scalability law to a CSV file", epilog=EPILOG,
        description="Fit the USL or Amdahl's law by bounded least squares; print coefficients, 95% intervals and peak.",  # not %-formatted
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=("usl", "amdahl"), help="scalability law")
    p.add_argument("--csv", required=True, help="CSV file with a header row")
    p.add_argument("--x", required=True, help="column of the load N (threads, cores, vCPUs, users)")
    p.add_argument("--y", required=True, help="column of the throughput X(N)")
    p.add_argument("--bootstrap", type=int_at_least(0, 100_000), default=1000, help="bootstrap replicates for the intervals (default: %(default)s)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed of the bootstrap (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the fit as JSON")
    p.set_defaults(func=run)
    return p


def fit_csv(path: Path | str, x: str, y: str, *, model: str = "usl", bootstrap: int = 1000, seed: int = 0) -> UslFit:
    """Read columns x and y of a CSV file and fit `model` to them. Every cell of the two columns must be a finite
    number, loads and throughputs positive: a bad cell is refused with its line and column, never dropped."""
    path = Path(path)
    n, tput = read_columns(path, x, y)
    n_params = 2 if model == "amdahl" else 3
    levels = len(set(n))
    if levels < n_params:
        raise UsageError(f"{path}: {levels} distinct value(s) of {x!r}; {'an Amdahl' if model == 'amdahl' else 'a USL'} fit has {n_params} parameters "
                         f"and needs at least {n_params} distinct loads ({n_params + 1} for a fit that can be judged)")
    try:
        return fit_usl(n, tput, bootstrap=bootstrap, seed=seed, model=model)
    except DatasetError as exc:  # the data came from the user's file: bad input
        raise UsageError(f"{path}: {exc}") from None


def read_columns(path: Path, x: str, y: str) -> tuple[list[float], list[float]]:
    """Columns x and y of a CSV file with a header row, as floats. Raises UsageError naming the file, the line
    and the column for anything that is not a table of positive finite numbers."""
    text = read_text(path, "CSV file", MAX_CSV_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise UsageError(f"{path}: line {reader.line_num}: not valid CSV: {exc}") from None
    if not rows:
        raise UsageError(f"{path}: the file is empty; expected a header row naming the columns, then one row per measurement")
    header = [cell.strip() for cell in rows[0][1]]
    cols = []
    for col, what in ((x, "--x"), (y, "--y")):
        if header.count(col) > 1:
            raise UsageError(f"{path}: column {col!r} appears {header.count(col)} times in the header")
        if col not in header:
            shown = ", ".join(h if h.isprintable() else repr(h) for h in header)  # a quoted name may hold a newline
            raise UsageError(f"{path}: no column {col!r} ({what}); columns: {shown}")
        cols.append(header.index(col))
    values: tuple[list[float], list[float]] = ([], [])
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise UsageError(f"{path}: line {line}: {len(row)} fields, but the header has {len(header)}")
        for col, i, out in zip((x, y), cols, values, strict=True):
            out.append(_cell(path, line, col, row[i]))
    if not values[0]:
        raise UsageError(f"{path}: no data rows after the header")
    return values


def _cell(path: Path, line: int, col: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        shown = repr(text) if text.strip() else "an empty cell"
        raise UsageError(f"{path}: line {line}: column {col!r}: {shown} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{path}: line {line}: column {col!r}: {text.strip()} is not allowed; loads and throughputs "
                         f"must be finite numbers > 0")
    return value


def describe(fit: UslFit) -> str:
    """Human-readable text of a fit."""
    def ci(name: str, v: float, lo_hi: tuple[float, float], se: float) -> str:
        inter = "" if any(map(math.isnan, lo_hi)) else f"  95% CI [{_num(lo_hi[0])}, {_num(lo_hi[1])}]"
        return f"{name:<20}{_num(v)}{inter}" + ("" if math.isnan(se) else f"  (s.e. {_num(se, 3)})")

    if math.isinf(fit.peak_n) and fit.sigma == 0:
        peak = [f"{'peak N*':<20}none: linear scaling (sigma = kappa = 0)"]
    elif math.isinf(fit.peak_n):
        peak = [ci("peak N*", fit.peak_n, fit.peak_n_ci, math.nan),
                f"{'X(N*)':<20}{_num(fit.peak_x)}  (ceiling gamma/sigma: no coherency cost)"]
    elif fit.peak_n < 1:
        peak = [f"{'peak N*':<20}none: throughput falls from N = 1 on (N* < 1)"]
    else:
        peak = [ci("peak N*", fit.peak_n, fit.peak_n_ci, math.nan), f"{'X(N*)':<20}{_num(fit.peak_x)}"]
    lines = [
        f"{fit.model.upper()} fit of {fit.n_points} points at {fit.n_levels} loads ({fit.n_range[0]:g}..{fit.n_range[1]:g}); "
        + (f"intervals: {fit.bootstrap} bootstrap replicates ({fit.ci_method})" if fit.ci_method != "none"
           else "no intervals (no repetitions and no residual degrees of freedom)"),
        ci("sigma (contention)", fit.sigma, fit.sigma_ci, fit.sigma_se),
        ci("kappa (coherency)", fit.kappa, fit.kappa_ci, fit.kappa_se),
        ci("gamma (scale)", fit.gamma, fit.gamma_ci, fit.gamma_se),
        *peak,
        f"{'R^2':<20}{fit.r2:.4f}   residual s.e. {_num(fit.residual_se, 4)}",
        f"poor fit: {fit.reason}" if fit.poor_fit else "fit: ok",
    ]
    return "\n".join(lines)


def _num(v: float, digits: int = 6) -> str:
    """A number for people: 0 as 0, and no denormals or rounding noise (runner.analysis.fmt)."""
    return fitted(v, digits, nan="n/a")


def run(args: argparse.Namespace) -> int:
    fit = fit_csv(args.csv, args.x, args.y, model=args.model, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps(fit.as_dict(), indent=2))
    else:
        print(describe(fit))
    return 0
