"""Numbers for people: how the report, `runner report`, `runner compare` and `runner fit` print a value.

A float gets `digits` significant digits; a denormal (4.941e-324) is 0; a fitted coefficient is 0 below FIT_ZERO
(solver noise, not a measurement); NaN and missing values are blank (or `nan`); infinities read inf/-inf.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pandas as pd

FIT_ZERO = 1e-12  # a fitted sigma, kappa or gamma closer to 0 than this is 0
DENORMAL = sys.float_info.min  # the smallest normal float: anything closer to 0 is rounding debris


def number(v: Any, digits: int = 4, *, zero_below: float = DENORMAL, nan: str = "") -> str:
    """`v` as text for a table: see the module docstring. Non-numbers are str(v)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return nan
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if not isinstance(v, (float, np.floating)):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return nan
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if abs(v) < zero_below:
        return "0"
    return f"{v:.{digits}g}"


def fitted(v: Any, digits: int = 4, *, nan: str = "") -> str:
    """A fitted coefficient: like `number`, with |v| < FIT_ZERO shown as 0."""
    return number(v, digits, zero_below=FIT_ZERO, nan=nan)
