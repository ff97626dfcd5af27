"""Jain's fairness index, said once: the lockbench parser, the guests' vm_jain and the over-commit analysis use it.

J = (sum x)^2 / (n sum x^2): 1 when every share is equal, 1/n when one gets everything. All-zero shares are
equal shares, so J = 1 (lockbench.c prints the same). No shares, or a negative one, have no index.

A module at the bottom of the package (like runner.errors): it imports nothing of the runner, so workloads,
execution and analysis can all import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def jain_from_sums(total, sumsq, count):
    """Jain's index from the sum, the sum of squares and the number of shares; scalars or numpy arrays alike
    (a vectorised form for per-group sums, as the over-commit table computes them). Zero sumsq gives 1."""
    total, sumsq, count = (np.asarray(v, dtype=float) for v in (total, sumsq, count))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(sumsq == 0, 1.0, total * total / (count * sumsq))
    return float(out) if out.ndim == 0 else out


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index of the shares `values` (see the module docstring).

    Raises ValueError on no values, a negative or a non-finite value."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("jain: no values")
    if any(not math.isfinite(v) or v < 0 for v in vals):
        raise ValueError("jain: negative or non-finite value")
    return jain_from_sums(math.fsum(vals), math.fsum(v * v for v in vals), len(vals))
