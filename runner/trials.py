"""Trials: cells x repetitions, with content-derived ids, in the order the matrix asks for. Pure functions.

A trial id is the first 16 hex digits of the SHA-256 of the canonical JSON of the workload, the trial's
resolved parameters, its repetition number and (when every host runs the whole matrix) its host. The same
matrix on the same hosts therefore always yields the same ids, whatever the order, and a resumed campaign
recognises what it has already measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner import defaults
from runner.errors import MatrixError
from runner.matrix.expand import expand_cells, resolve_params, uses_relative
from runner.matrix.load import Matrix

ID_LEN = 16


@dataclass(frozen=True)
class Trial:
    """One measurement to make: a cell's parameters, a repetition number and (placement `each`) a host."""

    campaign: str
    workload: str
    trial_id: str
    cell_id: str
    repetition: int
    params: tuple[tuple[str, Any], ...]  # resolved; fixed workload params and axis values, sorted by name
    written: tuple[tuple[str, Any], ...]  # axis values as written in the matrix ("50%")
    host: str | None = None  # None: any host of the pool

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def label(self) -> str:
        axes = dict(self.written)
        return " ".join(f"{k}={v}" for k, v in dict(self.params).items() if k in axes) + f" rep={self.repetition}"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:ID_LEN]


def cell_id(workload: str, params: Mapping[str, Any], host: str | None) -> str:
    doc: dict[str, Any] = {"workload": workload, "params": dict(params)}
    if host is not None:
        doc["host"] = host
    return _digest(doc)


def trial_id(cell: str, repetition: int) -> str:
    return _digest({"cell": cell, "repetition": repetition})


def resolve_in_environment(params: Mapping[str, Any], host_cpus: int, relative: frozenset[str]) -> dict[str, Any]:
    """Relative CPU counts ("50%") resolved where the workload runs: `vcpus` against the host's CPUs;
    every other CPU-count parameter against the trial's CPUs, `vcpus`: a guest's vCPUs, a container's
    cpuset size and, on the bare host, the CPUs the trial is given (so one `vcpus` axis compares host,
    container and guest at equal CPU counts). Without `vcpus`: the host's CPUs."""
    outer = resolve_params(params, host_cpus, relative & {"vcpus"})
    inner = outer["vcpus"] if isinstance(outer.get("vcpus"), int) else host_cpus
    return resolve_params(outer, inner, relative - {"vcpus"})


def plan(matrix: Matrix, cpus_by_host: Mapping[str, int]) -> list[Trial]:
    """Expand `matrix` for the given hosts (name -> online CPUs) into trials, in the matrix's order."""
    cells = expand_cells(matrix.axes, matrix.zip, matrix.exclude, matrix.include)
    relative = frozenset(k for k, s in matrix.param_schema.items() if s.get("x-cpus"))
    needs_cpus = uses_relative(matrix.params) or any(uses_relative(c) for c in cells)
    if matrix.placement == "each":
        targets: list[tuple[str | None, int]] = [(h, n) for h, n in sorted(cpus_by_host.items())]
    else:
        counts = set(cpus_by_host.values())
        if needs_cpus and len(counts) > 1:
            detail = ", ".join(f"{h}={n}" for h, n in sorted(cpus_by_host.items()))
            raise MatrixError(
                f"{matrix.path}: axes: values relative to the CPU count need pool hosts with equal CPU counts ({detail}); "
                "use hosts.placement: each"
            )
        targets = [(None, counts.pop() if counts else 1)]
    trials: list[list[Trial]] = []
    for host, cpus in targets:
        seen: set[str] = set()
        for cell in cells:
            merged = {**matrix.params, **cell}
            if (kernel := matrix.guest_kernels.get(str(merged.get("guest_kernel")))) is not None:
                merged["guest_kernel_spec"] = dict(kernel)  # the guest runner boots it; part of the cell's identity
            if (img := matrix.guest_images.get(str(merged.get("guest_image")))) is not None:
                merged["guest_image_spec"] = dict(img)  # likewise for the lab's own images
            params = dict(sorted(resolve_in_environment(merged, cpus, relative).items()))
            cid = cell_id(matrix.workload, params, host)
            if cid in seen:  # e.g. "50%" and 1 on a 2-CPU host: one cell, written first wins
                continue
            seen.add(cid)
            trials.append(
                [
                    Trial(
                        campaign=matrix.campaign,
                        workload=matrix.workload,
                        trial_id=trial_id(cid, rep),
                        cell_id=cid,
                        repetition=rep,
                        params=tuple(params.items()),
                        written=tuple(cell.items()),
                        host=host,
                    )
                    for rep in range(1, matrix.repetitions + 1)
                ]
            )
    ordered = order_trials(trials, matrix.order, matrix.seed)
    return group_by_guests(ordered) if matrix.reuse == "configuration" else ordered


# The parameters that make up a guest configuration: trials that agree on them (and on env and campaign)
# can run in the same booted guests.
GUEST_KEYS = ("vcpus", "memory", "vms", "pin", "guest_numa", "guest_kernel", "guest_kernel_spec", "guest_image", "guest_image_spec", "disk")


def guest_config_key(env: str, params: Mapping[str, Any], campaign: str) -> str | None:
    """What makes two trials' guests interchangeable: the environment, the campaign and GUEST_KEYS.
    None for the bare host. Equal keys may share one boot."""
    if env == "host":
        return None
    return _digest({"env": env, "campaign": campaign, **{k: params.get(k) for k in GUEST_KEYS}})


def trial_guest_key(t: Trial) -> str | None:
    p = t.param_dict
    return guest_config_key(str(p.get("env", defaults.ENV)), p, t.campaign)


def group_by_guests(trials: Sequence[Trial]) -> list[Trial]:
    """Trials of one guest configuration (per host) back to back: configurations in the order their first
    trial appears, trials inside one in their order. Bare-host trials keep their places."""
    groups: dict[tuple[str | None, str | None], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.host, trial_guest_key(t)), []).append(t)
    if all(k is None for _, k in groups):
        return list(trials)
    return [t for group in groups.values() for t in group]


def boots_needed(trials: Sequence[Trial], reuse: str) -> int:
    """Guest boots (a boot starts a trial's `vms` guests at once) the trials need when run in this order on
    each host: every guest trial with reuse `trial`; every change of configuration with `configuration`."""
    if reuse == "trial":
        return sum(1 for t in trials if trial_guest_key(t) is not None)
    boots, last = 0, {}
    for t in trials:
        key = trial_guest_key(t)
        if key is not None and last.get(t.host) != key:
            boots += 1
        last[t.host] = key
    return boots


def more_repetitions(first: Trial, repetitions: Sequence[int]) -> list[Trial]:
    """Further repetitions of `first`'s cell (repetitions as bounds add them in rounds): the same cell, the
    ids `plan` would have given those repetition numbers, so a resumed campaign recognises them."""
    return [dataclasses.replace(first, repetition=r, trial_id=trial_id(first.cell_id, r)) for r in repetitions]


def order_trials(per_cell: Sequence[Sequence[Trial]], order: str, seed: int) -> list[Trial]:
    """as-written: cell by cell; interleave: repetition 1 of every cell, then 2, ...; shuffle: seeded."""
    if order == "as-written":
        return [t for reps in per_cell for t in reps]
    if order == "interleave":
        depth = max((len(r) for r in per_cell), default=0)
        return [reps[i] for i in range(depth) for reps in per_cell if i < len(reps)]
    if order == "shuffle":
        flat = [t for reps in per_cell for t in reps]
        random.Random(seed).shuffle(flat)
        return flat
    raise ValueError(f"unknown order {order!r}")


def axis_types(trials: Sequence[Trial], axes: Sequence[str]) -> dict[str, str]:
    """Column type of each axis over all trials: int, float, bool or str (mixed types become str)."""
    from runner.records.schema import RESERVED

    types: dict[str, str] = {}
    for axis in axes:
        if axis in RESERVED:  # e.g. env: the dataset's fixed column of that name holds it
            continue
        kinds = {type(dict(t.params)[axis]) for t in trials if axis in dict(t.params)}
        if kinds == {bool}:
            types[axis] = "bool"
        elif kinds and kinds <= {int}:
            types[axis] = "int"
        elif kinds and kinds <= {int, float}:
            types[axis] = "float"
        else:
            types[axis] = "str"
    return types
