"""`Metric`: one measured value, the row a trial's result is made of (workloads, probes and the runner
produce them; runner.records.store writes them), and the arithmetic of totals across guests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runner.fairness import jain


@dataclass(frozen=True)
class Metric:
    """One measured value. `thread`/`vm` index per-thread or per-guest values; None for totals.
    `probe`/`side`: the probe (runner.probes) that read it and where (guest or host); None for the
    workload's own results."""

    name: str
    value: float
    unit: str
    higher_is_better: bool | None = True
    thread: int | None = None
    vm: int | None = None
    probe: str | None = None
    side: str | None = None


def vm_values(per_vm: Sequence[Sequence[Metric]], name: str) -> list[float] | None:
    """Each guest's total (thread None) `name`, in guest order; None unless every guest reported it."""
    values = [m.value for metrics in per_vm for m in metrics if m.name == name and m.thread is None]
    return values if len(values) == len(per_vm) else None


def added_up(per_vm: Sequence[Sequence[Metric]], name: str, *aliases: str) -> list[Metric]:
    """A rate that adds up over the guests (a throughput): its sum (also under each alias) and Jain's
    fairness index of the guests' values (`vm_jain`); [] unless every guest reported it."""
    values = vm_values(per_vm, name)
    if values is None:
        return []
    first = next(m for m in per_vm[0] if m.name == name and m.thread is None)
    return [Metric(n, sum(values), first.unit, first.higher_is_better) for n in (name, *aliases)] + [Metric("vm_jain", jain(values), "index", True)]
