"""Synthetic campaign frames with known scaling laws, shaped like runner.records.schema's tables.

Used by the analysis tests, bench/report_bench.py and for trying the notebook API without a campaign.
Throughput follows a USL per variant (optionally collapsing to a fraction of itself past a load), with
multiplicative log-normal noise per repetition; per-thread rows split each total, and with a `vms` axis every
VM of a trial gets a per-VM row (the total row is their sum).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from runner.analysis.usl import usl_curve
from runner.records.schema import METRIC_COLUMNS, VALUE_COLUMNS


@dataclass(frozen=True)
class Law:
    """Throughput of one variant: USL(sigma, kappa, gamma), times `after` for loads above `collapse_at`."""

    sigma: float
    kappa: float
    gamma: float
    collapse_at: float = np.inf
    after: float = 0.05

    def __call__(self, n: np.ndarray) -> np.ndarray:
        x = usl_curve(np.asarray(n, dtype=float), self.sigma, self.kappa, self.gamma)
        return np.where(n > self.collapse_at, x * self.after, x)


def synthetic_metrics(
    *,
    axes: Mapping[str, Sequence],
    law: Callable[[dict], Law],
    load_axis: str = "threads",
    reps: int = 5,
    noise: float = 0.03,
    seed: int = 0,
    campaign: str = "synthetic",
    workload: str = "lockbench",
    env: str = "host",
    accel: str = "none",
    hosts: Sequence[str] = ("h1",),
    per_thread: bool = True,
    vm_shares: Callable[[int], np.ndarray] | None = None,
    overcommit_loss: float = 0.0,
) -> pd.DataFrame:
    """Metric rows (metric 'throughput', ops/s) for every cell of the axes' cross product x `reps`.

    `law(cell_params)` gives each cell's Law; the load is the `load_axis` value. With a `vms` axis of k VMs,
    the total is law(N) x (1 - overcommit_loss)^(k-1) shared by the VMs in proportions `vm_shares(k)` (equal by
    default). Hosts are assigned round-robin over trials."""
    rng = np.random.default_rng(seed)
    names = list(axes)
    cells = pd.DataFrame(list(itertools.product(*axes.values())), columns=names)
    cells["cell_id"] = [f"c{i:05d}" for i in range(len(cells))]
    laws = [law(dict(zip(names, row))) for row in cells[names].itertuples(index=False)]
    base = np.array([lw(np.array([n]))[0] for lw, n in zip(laws, cells[load_axis])])
    k = cells["vms"].to_numpy(dtype=int) if "vms" in cells.columns else np.ones(len(cells), dtype=int)
    base = base * (1 - overcommit_loss) ** (k - 1)
    tr = cells.loc[cells.index.repeat(reps)].reset_index(drop=True)
    tr["repetition"] = np.tile(np.arange(1, reps + 1), len(cells))
    tr["trial_id"] = tr["cell_id"] + "-r" + tr["repetition"].astype(str)
    tr["host"] = np.array(hosts, dtype=object)[np.arange(len(tr)) % len(hosts)]
    total = np.repeat(base, reps) * rng.lognormal(0.0, noise, len(tr))
    kt = np.repeat(k, reps)
    common = {"campaign": campaign, "attempt": 1, "env": env, "accel": accel, "unit": "ops/s",
              "higher_is_better": True, "workload": workload, "metric": "throughput"}
    parts = [tr.assign(value=total, thread=np.nan, vm=np.nan)]
    if "vms" in cells.columns:
        idx = np.repeat(np.arange(len(tr)), kt)
        vm = np.arange(idx.size) - np.repeat(np.cumsum(kt) - kt, kt)
        share = np.concatenate([vm_shares(int(n)) if vm_shares else np.full(int(n), 1.0 / n) for n in kt])
        parts.append(tr.iloc[idx].reset_index(drop=True).assign(value=total[idx] * share, thread=np.nan, vm=vm))
    if per_thread:
        nthreads = tr[load_axis].to_numpy(dtype=int)
        idx = np.repeat(np.arange(len(tr)), nthreads)
        th = np.arange(idx.size) - np.repeat(np.cumsum(nthreads) - nthreads, nthreads)
        val = total[idx] / nthreads[idx] * rng.lognormal(0.0, noise, idx.size)
        parts.append(tr.iloc[idx].reset_index(drop=True).assign(value=val, thread=th, vm=np.nan))
    out = pd.concat(parts, ignore_index=True).assign(**common)
    out["thread"] = out["thread"].astype("Int32")
    out["vm"] = out["vm"].astype("Int32")
    out["repetition"] = out["repetition"].astype("int32")
    out["attempt"] = out["attempt"].astype("int32")
    return out.reindex(columns=[*METRIC_COLUMNS, *names])  # fixed columns it has no value for (e.g. probe) null


def synthetic_trials(metrics: pd.DataFrame) -> pd.DataFrame:
    """One ok attempt per trial of `metrics`, with TRIAL_FIELDS columns and the axis columns."""
    axes = [c for c in metrics.columns if c not in VALUE_COLUMNS]
    tr = metrics.drop_duplicates(["campaign", "trial_id"])[axes].reset_index(drop=True)
    start = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(tr)) * 10, unit="s")
    tr["status"] = "ok"
    tr["error"] = None
    tr["started_at"] = start
    tr["ended_at"] = start + pd.Timedelta(seconds=9)
    tr["wall_s"] = 9.0
    tr["workload_wall_s"] = 8.0
    tr["params_json"] = "{}"
    tr["guest_json"] = None
    return tr


def synthetic_provenance(campaign: str, hosts: Mapping[str, Mapping] | None = None) -> dict:
    """A provenance dict like read_campaign's: campaign, versions, matrix hash, host facts and matrix."""
    hosts = hosts or {"h1": {"cpu_model": "Synthetic CPU 80-core", "cores": 80, "numa_nodes": 8,
                             "kernel": "6.1.0-synthetic", "cmdline": "quiet"}}
    matrix = {"workload": "lockbench", "matrix": {"threads": [1, 2, 4]}}
    return {"campaign": campaign, "matrix_sha256": "0" * 64, "runner_version": "0.1.0", "git_commit": "synthetic",
            "hosts": {h: dict(f) for h, f in hosts.items()}, "matrix": json.loads(json.dumps(matrix))}
