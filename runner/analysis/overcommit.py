"""Over-commit: k identical VMs sharing the same cores, compared with one VM alone.

With T1 the median throughput of the single-VM cell (axis vms = 1, every other parameter equal) and T_k,i
the throughput of VM i of k in one repetition (per-VM rows, vm = 0..k-1):
- per-VM normalized throughput T_k,i / T1 (ideal 1/k);
- aggregate efficiency sum_i T_k,i / T1 (ideal 1);
- Jain's fairness index J = (sum_i T_k,i)^2 / (k sum_i T_k,i^2) (1 = fair, 1/k = one VM gets everything;
  runner.fairness, shared with the workloads: all-zero throughputs are equal shares, J = 1).
Efficiency and fairness are computed per repetition, then summarised per cell by median and quartiles.
For the single-VM cell its total row (or its vm = 0 row) is used, so k = 1 shows the reference's own spread.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from runner.analysis.stats import as_pandas, check_metrics, param_columns
from runner.errors import DatasetError
from runner.fairness import jain_from_sums
from runner.records.schema import ordinary_role

VMS_AXIS = "vms"


def _per_vm_rows(metrics: pd.DataFrame, metric: str, axis: str) -> pd.DataFrame:
    """Rows giving each VM's value per repetition: per-VM rows, plus total rows of single-VM trials that have none."""
    m = metrics[(metrics["metric"] == metric).to_numpy()]
    for col in ("thread", "probe"):
        if col in m.columns:
            m = m[m[col].isna().to_numpy()]
    if "role" in m.columns:  # a canary run is not a repetition of its cell
        m = m[ordinary_role(m["role"])]
    if m.empty:
        return m
    trial = "trial_id" if "trial_id" in m.columns else "cell_id"
    has_vm = m["vm"].notna() if "vm" in m.columns else pd.Series(False, index=m.index)
    per_vm = m[has_vm.to_numpy()]
    single = m[(~has_vm & (m[axis] == 1)).to_numpy()]
    single = single[~single[trial].isin(per_vm[trial])].assign(vm=0)
    out = pd.concat([per_vm, single], ignore_index=True)
    return out[out["value"].notna().to_numpy()]


def overcommit_table(metrics: Any, *, metric: str = "throughput", axis: str = VMS_AXIS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Efficiency and fairness of every over-commit cell, and the per-VM normalized throughputs.

    Returns (cells, per_vm). `cells`: one row per cell with its parameters, `k`, `t1`, `n` (repetitions),
    `efficiency` (median aggregate efficiency), `efficiency_q1/_q3`, `jain` (median), `jain_min`, `norm_min`
    and `norm_max` (smallest and largest per-VM median of T_k,i/T1), `ideal_per_vm` (1/k) and `vms_seen`.
    `per_vm`: one row per cell and VM with `vm`, `norm` (median T_k,i/T1), `norm_q1`, `norm_q3`.
    Cells without a matching single-VM cell are left out (no reference).
    """
    metrics = as_pandas(metrics)
    check_metrics(metrics)
    if axis not in metrics.columns:
        raise DatasetError(f"no over-commit axis {axis!r} in the metrics table")
    rows = _per_vm_rows(metrics, metric, axis)
    ref_keys = [c for c in param_columns(metrics) if c != axis]
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame()
    trial = "trial_id" if "trial_id" in rows.columns else "repetition"
    ref = rows[(rows[axis] == 1).to_numpy()]
    t1 = ref.groupby(ref_keys, dropna=False, observed=True)["value"].median().rename("t1").reset_index()
    rows = rows.merge(t1, on=ref_keys, how="inner")
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame()
    rows["norm"] = rows["value"] / rows["t1"]
    rows["sq"] = rows["value"] ** 2
    cell = (["campaign"] if "campaign" in rows.columns else []) + ["cell_id"]
    per_trial = rows.groupby(cell + [trial], observed=True).agg(
        total=("value", "sum"), sumsq=("sq", "sum"), count=("value", "count"), t1=("t1", "first"))
    per_trial["efficiency"] = per_trial["total"] / per_trial["t1"]
    per_trial["jain"] = jain_from_sums(per_trial["total"], per_trial["sumsq"], per_trial["count"])
    g = per_trial.groupby(level=cell)
    cells = g.agg(n=("efficiency", "count"), efficiency=("efficiency", "median"),
                  jain=("jain", "median"), jain_min=("jain", "min"), t1=("t1", "first"))
    cells["efficiency_q1"] = g["efficiency"].quantile(0.25)
    cells["efficiency_q3"] = g["efficiency"].quantile(0.75)
    gv = rows.groupby(cell + ["vm"], observed=True)["norm"]
    per_vm = gv.median().rename("norm").to_frame()
    per_vm["norm_q1"] = gv.quantile(0.25)
    per_vm["norm_q3"] = gv.quantile(0.75)
    per_vm = per_vm.reset_index()
    span = per_vm.groupby(cell)["norm"].agg(norm_min="min", norm_max="max", vms_seen="count")
    cells = cells.join(span).reset_index()
    params = rows.drop_duplicates(cell)[list(dict.fromkeys(cell + param_columns(metrics)))]
    cells = params.merge(cells, on=cell)
    cells["k"] = cells[axis].astype(int)
    cells["ideal_per_vm"] = 1.0 / cells["k"]
    per_vm = params.merge(per_vm, on=cell)
    order = ref_keys + ["k"]
    return cells.sort_values(order, kind="stable").reset_index(drop=True), per_vm.sort_values(
        ref_keys + [axis, "vm"], kind="stable").reset_index(drop=True)
