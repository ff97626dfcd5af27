"""Every axis of a campaign, under its own name, whatever that name is.

Two things hide an axis from the tables and figures of a report:
- an axis the dataset keeps in a fixed column of the trials table only (guest_kernel, guest_image: they
  describe the guest that served the trial, runner.records.schema.GUEST_FIELDS), so the metrics table has no
  column for it: `with_trial_axes` adds it back from the trials' parameters (params_json);
- an axis named like a column the analysis makes (`n`, `median`, `k`, `efficiency` ...): `own_names` renames such
  axes to a private name for the computation (AXIS_PREFIX + name), and `shown` / `shown_frame` give them back
  their own names in what people see, renaming the statistic beside them to `stat_<name>` (summary.csv keeps
  both: the axis `n` and the repetition count `stat_n`).

`metric` and `value` cannot be axes: they are fixed columns of the dataset and the matrix refuses them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from runner.analysis.stats import axis_columns, slice_label
from runner.records.schema import CATALOG_PARAMS

AXIS_PREFIX = "axis:"
STAT_PREFIX = "stat_"
# Columns the analysis makes beside a cell's parameters (runner.analysis.stats, overcommit, collapse, explain,
# drift, adaptive, report): an axis of one of these names is renamed while the report is computed.
ANALYSIS_COLUMNS = frozenset({
    "n", "count", "median", "mean", "min", "max", "q1", "q3", "iqr", "rel_iqr", "ci_low", "ci_high", "ci_rel", "ci",
    "wide", "reps_needed", "hosts", "k", "t1", "efficiency", "efficiency_q1", "efficiency_q3", "jain", "jain_min",
    "norm", "norm_q1", "norm_q3", "norm_min", "norm_max", "ideal_per_vm", "vms_seen", "total", "sumsq", "sq", "axis",
    "peak_n", "peak_x", "collapsed", "collapse_n", "collapse_x", "drop", "last_n", "last_ratio", "d", "band",
    "n_levels", "label", "variant", "status", "repetitions", "ok", "kind", "load", "at", "run", "reference",
    "ref_low", "ref_high", "shift", "drifted", "direction", "busy", "load1", "governor", "turbo", "irqbalance",
    "numa_balancing", "throttle_count", "throttle_rise", "figure", "before", "after", "change", "level", "x",
})
# Parameters that are fixed columns of the trials table but may be axes of the matrix.
TRIAL_AXES = ("guest_kernel", "guest_image")


def with_trial_axes(metrics: pd.DataFrame, trials: pd.DataFrame | None) -> pd.DataFrame:
    """`metrics` with a column for every parameter that varies between the trials (params_json) but has no
    column in the metrics table (guest_kernel, guest_image: fixed columns of the trials table), joined by
    trial_id. Unchanged when nothing is missing or the trials do not say."""
    if trials is None or trials.empty or "params_json" not in trials.columns or "trial_id" not in metrics.columns:
        return metrics
    first = trials.drop_duplicates("trial_id")
    params = {tid: _params(text) for tid, text in zip(first["trial_id"], first["params_json"])}
    keys = sorted({k for p in params.values() for k in p} - set(metrics.columns) - set(CATALOG_PARAMS))  # guest_kernel names its spec
    varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params.values()}) > 1]
    if not varying:
        return metrics
    out = metrics.copy()
    for key in varying:
        values = {tid: p.get(key) for tid, p in params.items()}
        kinds = {type(v) for v in values.values() if v is not None}
        col = out["trial_id"].map(values)
        out[key] = col if kinds <= {int, float} and bool not in kinds else col.map(lambda v: None if v is None or (
            isinstance(v, float) and math.isnan(v)) else v if isinstance(v, str) else json.dumps(v))
    return out


def _params(text: Any) -> dict[str, Any]:
    try:
        doc = json.loads(text) if isinstance(text, str) else {}
    except json.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def own_names(metrics: pd.DataFrame, *frames: pd.DataFrame | None) -> tuple[pd.DataFrame, list[pd.DataFrame | None], dict[str, str]]:
    """Rename the axes of `metrics` named like an analysis column (ANALYSIS_COLUMNS) to AXIS_PREFIX + name, in
    `metrics` and in the other frames (trials) alike; returns (metrics, frames, {private name: own name})."""
    renamed = {c: AXIS_PREFIX + c for c in axis_columns(metrics) if c in ANALYSIS_COLUMNS}
    if not renamed:
        return metrics, list(frames), {}
    out = [f.rename(columns=renamed) if f is not None else None for f in frames]
    return metrics.rename(columns=renamed), out, {v: k for k, v in renamed.items()}


def shown(name: Any) -> str:
    """A column's name as people see it: an axis renamed by own_names gets its own name back."""
    text = str(name)
    return text[len(AXIS_PREFIX):] if text.startswith(AXIS_PREFIX) else text


def label(params: Mapping[str, Any], skip: Iterable[str] = ()) -> str:
    """slice_label with every axis under its own name."""
    return slice_label({shown(k): v for k, v in params.items()}, skip=tuple(skip))


def shown_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its renamed axes under their own names, and the statistic each one collided with as stat_<name>."""
    own = {c: shown(c) for c in df.columns if str(c).startswith(AXIS_PREFIX)}
    if not own:
        return df
    clash = {c: STAT_PREFIX + str(c) for c in df.columns if c in set(own.values())}
    return df.rename(columns={**clash, **own})
