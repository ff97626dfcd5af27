"""`runner fit`: fit the Universal Scalability Law (or Amdahl's law) to two columns of a CSV file."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from runner.analysis.usl import UslFit, fit_usl
from runner.errors import UsageError

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
        description="Fit the USL or Amdahl's law by bounded least squares; print coefficients, 95%% intervals and peak.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=("usl", "amdahl"), help="scalability law")
    p.add_argument("--csv", required=True, help="CSV file with a header row")
    p.add_argument("--x", required=True, help="column of the load N (threads, cores, vCPUs, users)")
    p.add_argument("--y", required=True, help="column of the throughput X(N)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for the intervals (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the fit as JSON")
    p.set_defaults(func=run)
    return p


def fit_csv(path: Path | str, x: str, y: str, *, model: str = "usl", bootstrap: int = 1000, seed: int = 0) -> UslFit:
    """Read columns x and y of a CSV file and fit `model` to them."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no CSV file {path}")
    df = pd.read_csv(path)
    for col in (x, y):
        if col not in df.columns:
            raise UsageError(f"{path}: no column {col!r}; columns: {', '.join(map(str, df.columns))}")
    return fit_usl(pd.to_numeric(df[x], errors="coerce"), pd.to_numeric(df[y], errors="coerce"),
                   bootstrap=bootstrap, seed=seed, model=model)


def describe(fit: UslFit) -> str:
    """Human-readable text of a fit."""
    def ci(name: str, v: float, lo_hi: tuple[float, float], se: float) -> str:
        inter = "" if any(map(math.isnan, lo_hi)) else f"  95% CI [{lo_hi[0]:.6g}, {lo_hi[1]:.6g}]"
        return f"{name:<20}{v:.6g}{inter}" + ("" if math.isnan(se) else f"  (s.e. {se:.3g})")

    lines = [
        f"{fit.model.upper()} fit of {fit.n_points} points at {fit.n_levels} loads "
        f"({fit.n_range[0]:g}..{fit.n_range[1]:g}); intervals: {fit.bootstrap} bootstrap replicates ({fit.ci_method})",
        ci("sigma (contention)", fit.sigma, fit.sigma_ci, fit.sigma_se),
        ci("kappa (coherency)", fit.kappa, fit.kappa_ci, fit.kappa_se),
        ci("gamma (scale)", fit.gamma, fit.gamma_ci, fit.gamma_se),
        ci("peak N*", fit.peak_n, fit.peak_n_ci, math.nan),
        f"{'X(N*)':<20}{fit.peak_x:.6g}" + ("  (ceiling gamma/sigma: no coherency cost)" if math.isinf(fit.peak_n) else ""),
        f"{'R^2':<20}{fit.r2:.4f}   residual s.e. {fit.residual_se:.4g}",
        f"poor fit: {fit.reason}" if fit.poor_fit else "fit: ok",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    fit = fit_csv(args.csv, args.x, args.y, model=args.model, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps(fit.as_dict(), indent=2))
    else:
        print(describe(fit))
    return 0
