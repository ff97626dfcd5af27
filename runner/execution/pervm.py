"""Per-VM results into one trial: each guest's metrics (vm = its index), its telemetry (steal time, vCPU run
delay, SSH readiness, overlap with the common window), and the totals across guests (vm null) that the
workload declares (`Workload.combine_vms`). Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from runner.execution.environments import Outcome
from runner.provision import libvirt
from runner.records.metric import Metric
from runner.workloads.base import Workload


def steal_pct(before: str, after: str) -> float | None:
    """Guest steal time in % of all CPU time between two /proc/stat texts; None if no time passed."""
    s0, t0 = libvirt.parse_proc_stat_steal(before)
    s1, t1 = libvirt.parse_proc_stat_steal(after)
    return 100.0 * (s1 - s0) / (t1 - t0) if t1 > t0 else None


def run_delay_s(before: Mapping[int, tuple[int, int, int]], after: Mapping[int, tuple[int, int, int]]) -> float | None:
    """Seconds the guest's vCPU threads waited on host runqueues between two vcpu_schedstats snapshots."""
    common = set(before) & set(after)
    if not common:
        return None
    return sum(after[v][1] - before[v][1] for v in common) / 1e9


def common_window(spans: Sequence[tuple[float, float]]) -> tuple[float, float, list[float]]:
    """The window all guests measured in (latest start, earliest end) and each guest's overlap with it:
    the fraction of the guest's own span inside the window (1.0: it measured exactly the common window)."""
    start, end = max(s for s, _ in spans), min(e for _, e in spans)
    width = max(0.0, end - start)
    return start, end, [min(1.0, width / (e - s)) if e > s else 0.0 for s, e in spans]


def combine(per_vm: Sequence[Sequence[Metric]], telemetry: Sequence[Mapping[str, float | None]], workload: Workload) -> list[Metric]:
    """Per-guest metrics (relabelled vm = i), per-guest telemetry, then the totals across guests (vm null):
    `vms`, the workload's own (`workload.combine_vms`) and the telemetry's.

    telemetry[i] may hold `ssh_ready_s`, `guest_steal_pct`, `vcpu_run_delay_s`, `window_overlap`
    (None: not available)."""
    units = {"ssh_ready_s": ("s", False), "guest_steal_pct": ("%", False), "vcpu_run_delay_s": ("s", False),
             "window_overlap": ("fraction", True)}
    out: list[Metric] = []
    for i, (metrics, tel) in enumerate(zip(per_vm, telemetry, strict=True)):
        out += [replace(m, vm=i) for m in metrics]
        out += [Metric(name, float(v), *units[name], vm=i) for name, v in tel.items() if v is not None]
    k = len(per_vm)
    out.append(Metric("vms", float(k), "guests", None))
    out += workload.combine_vms(per_vm)
    totals = {"ssh_ready_s": max, "guest_steal_pct": lambda v: sum(v) / len(v), "vcpu_run_delay_s": sum, "window_overlap": min}
    for name, agg in totals.items():
        values = [t[name] for t in telemetry if t.get(name) is not None]
        if len(values) == k:
            out.append(Metric(name, float(agg(values)), *units[name]))
    return out


def merge_outcomes(outcomes: Sequence[Outcome], telemetry: Sequence[Mapping[str, float | None]], workload: Workload,
                   **fields: Any) -> Outcome:
    """One Outcome of a trial from the Outcomes of its guests: the first failure or timeout wins."""
    wall = max((o.workload_wall_s for o in outcomes if o.workload_wall_s is not None), default=None)
    for o in outcomes:
        if o.status != "ok":
            return Outcome(o.status, o.error, workload_wall_s=wall, **fields)
    return Outcome("ok", None, tuple(combine([o.metrics for o in outcomes], telemetry, workload)), wall, **fields)

