"""Trials: cells x repetitions, with content-derived ids, in the order the matrix asks for. Pure functions.

A trial id is the first 16 hex digits of the SHA-256 of the canonical JSON of the workload, the trial's
resolved parameters, its repetition number and (when every host runs the whole matrix) its host. The same
matrix on the same hosts therefore always yields the same ids, whatever the order, and a resumed campaign
recognises what it has already measured.

A matrix's `canary` cell is also run again and again on each host (runner.execution.canary): those runs are
Trials with role CANARY and ids of their own (`canary_id`: cell, host, run number), never repetitions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner import defaults
from runner.errors import MatrixError
from runner.matrix.expand import expand_cells, normal_numbers, resolve_params, uses_relative
from runner.matrix.load import Matrix
from runner.provision import environments
from runner.records.schema import RESERVED

ID_LEN = 16
CANARY = "canary"  # Trial.role (and the dataset's `role` column) of a canary run


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
    role: str | None = None  # None: a repetition of its cell; CANARY: a re-run of the canary cell (not a repetition)

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def label(self) -> str:
        axes = dict(self.written)
        run = f"canary {self.repetition}" if self.role == CANARY else f"rep={self.repetition}"
        return " ".join(f"{k}={v}" for k, v in dict(self.params).items() if k in axes) + f" {run}"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:ID_LEN]


def cell_id(workload: str, params: Mapping[str, Any], host: str | None) -> str:
    doc: dict[str, Any] = {"workload": workload, "params": normal_numbers(dict(params))}  # 1.0 and 1: one id
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


def _targets(matrix: Matrix, cells: Sequence[Mapping[str, Any]], cpus_by_host: Mapping[str, int]) -> list[tuple[str | None, int]]:
    """(host, CPUs) to plan for: every host (placement each), or the pool as one (None) with its CPU count."""
    needs_cpus = uses_relative(matrix.params) or any(uses_relative(c) for c in cells)
    if matrix.placement == "each":
        return [(h, n) for h, n in sorted(cpus_by_host.items())]
    counts = set(cpus_by_host.values())
    if needs_cpus and len(counts) > 1:
        detail = ", ".join(f"{h}={n}" for h, n in sorted(cpus_by_host.items()))
        raise MatrixError(
            f"{matrix.path}: axes: values relative to the CPU count need pool hosts with equal CPU counts ({detail}); "
            "use hosts.placement: each"
        )
    return [(None, counts.pop() if counts else 1)]


def _relative(matrix: Matrix) -> frozenset[str]:
    """The parameters whose values may be relative to a CPU count ("50%")."""
    return frozenset(k for k, s in matrix.param_schema.items() if s.get("x-cpus"))


def _cell_params(matrix: Matrix, cell: Mapping[str, Any], cpus: int, relative: frozenset[str]) -> dict[str, Any]:
    """A cell's parameters as its trials get them: fixed parameters, axis values, catalog entries, resolved."""
    merged = {**matrix.params, **cell}
    if (kernel := matrix.guest_kernels.get(str(merged.get("guest_kernel")))) is not None:
        env = environments.get(str(merged.get("env", defaults.ENV)))
        if "build" in kernel and not env.boots_kernel:  # the host itself, a container: the host's kernel
            raise MatrixError(f"{matrix.path}: guest_kernel {merged['guest_kernel']!r} is a kernel recipe: env {env.name} runs "
                              f"the host's kernel; boot it in kvm or xen guests, or exclude the {env.name} cells")
        merged["guest_kernel_spec"] = dict(kernel)  # the guest runner boots it; part of the cell's identity
    if (img := matrix.guest_images.get(str(merged.get("guest_image")))) is not None:
        merged["guest_image_spec"] = dict(img)  # likewise for the lab's own images
    return normal_numbers(dict(sorted(resolve_in_environment(merged, cpus, relative).items())))  # 1.0 is 1: one cell


def _check_resolved(matrix: Matrix, cell: Mapping[str, Any], params: Mapping[str, Any], cpus: int, relative: frozenset[str]) -> None:
    """A relative value ("1000000%") resolved past the parameter's own bounds is refused at plan time, naming
    the value as written, what it resolves to on these CPUs and the bound (not found by the workload at run time)."""
    schema = matrix.param_schema
    for key in relative:
        value = params.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        written = cell.get(key, matrix.params.get(key))
        where = f"axes.{key}" if key in cell else f"workload.params.{key}"
        high = schema.get(key, {}).get("maximum")
        if high is not None and value > high:
            raise MatrixError(f"{matrix.path}: {where}: {written!r} is {value} on {cpus} CPUs, more than the maximum {high} "
                              f"of {key!r}; allowed: a count or percentage that comes to at most {high}")


def plan(matrix: Matrix, cpus_by_host: Mapping[str, int]) -> list[Trial]:
    """Expand `matrix` for the given hosts (name -> online CPUs) into trials, in the matrix's order."""
    cells = expand_cells(matrix.axes, matrix.zip, matrix.exclude, matrix.include)
    relative = _relative(matrix)
    trials: list[list[Trial]] = []
    for host, cpus in _targets(matrix, cells, cpus_by_host):
        seen: set[str] = set()
        for cell in cells:
            params = _cell_params(matrix, cell, cpus, relative)
            _check_resolved(matrix, cell, params, cpus, relative)
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
    if not environments.get(env).starts_guests:
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


# -- the canary: one cell re-run every N trials on each host -------------------------------------------------

def canary_cells(matrix: Matrix, cpus_by_host: Mapping[str, int]) -> dict[str | None, Trial]:
    """The matrix's canary cell as `plan` makes it, per planning target: each host (placement each) or the
    pool (None). Its `cell_id` is the cell's own (canary runs are re-runs of that cell); repetition 0 and
    role CANARY mark it as a template for `canary_trial`. Empty without a canary."""
    if matrix.canary is None:
        return {}
    cells = expand_cells(matrix.axes, matrix.zip, matrix.exclude, matrix.include)
    out: dict[str | None, Trial] = {}
    for host, cpus in _targets(matrix, cells, cpus_by_host):
        params = _cell_params(matrix, matrix.canary.cell, cpus, _relative(matrix))
        cid = cell_id(matrix.workload, params, host)
        out[host] = Trial(campaign=matrix.campaign, workload=matrix.workload, trial_id="", cell_id=cid, repetition=0,
                          params=tuple(params.items()), written=tuple(matrix.canary.cell.items()), host=host, role=CANARY)
    return out


def canary_id(cell: str, host: str, run: int) -> str:
    """The id of canary run `run` (from 1) on `host`: the same on every launch, distinct from every repetition."""
    return _digest({"cell": cell, "canary": run, "host": host})


def canary_trial(template: Trial, host: str, run: int) -> Trial:
    """Canary run `run` on `host` (pinned there, also in a pool): its repetition number is the run number."""
    return dataclasses.replace(template, trial_id=canary_id(template.cell_id, host, run), repetition=run, host=host, role=CANARY)


def canary_due(since: int | None, every: int | None, elapsed_s: float | None = None, minutes: float | None = None) -> bool:
    """Whether a host's next trial is a canary run: it has run none yet (`since` None), or, since its last one,
    `every` trials of the matrix, or at least one trial and `minutes` minutes (`elapsed_s`: seconds since that
    canary run started), whichever comes first (None: that limit is not set). With `every` alone the canary
    runs before a host's 1st, (every+1)th, (2 every+1)th ... trial; a trial always comes between two canary
    runs, also when one canary run takes longer than `minutes`."""
    if since is None:
        return True
    if every is not None and since >= every:
        return True
    return minutes is not None and elapsed_s is not None and since >= 1 and elapsed_s >= 60.0 * minutes


def canary_rule(every: int | None, minutes: float | None) -> str:
    """The canary's rhythm in words, for `runner plan` and the progress display (pure)."""
    limits = [f"{every} trials" if every is not None else "", f"{minutes:g} minutes" if minutes is not None else ""]
    both = " (whichever comes first)" if all(limits) else ""
    return f"before the first trial, after every {' or '.join(x for x in limits if x)}{both} and after the last trial"


def place_canaries(trials: Sequence[Trial], template: Trial, host: str, every: int | None, *, first_run: int = 1,
                   since: int | None = None, minutes: float | None = None, estimate: Callable[[Trial], float] | None = None,
                   closing: bool = False) -> list[Trial]:
    """The trials one host runs, in order, with the canary runs where the campaign puts them (canary_due):
    what `runner plan` shows; the controller makes the same decision trial by trial (runner.execution.canary).
    `minutes` counts only with `estimate` (a trial's rough seconds: the plan's clock); `closing` adds the run
    after the host's last trial (`Canaries.closing`) when it ran a trial since its last canary run."""
    out: list[Trial] = []
    run = first_run
    elapsed = 0.0
    clock = minutes if estimate is not None else None
    for t in trials:
        if canary_due(since, every, elapsed, clock):
            out.append(canary_trial(template, host, run))
            run, since, elapsed = run + 1, 0, estimate(template) if estimate is not None else 0.0
        out.append(t)
        since = (since or 0) + 1
        elapsed += estimate(t) if estimate is not None else 0.0
    if closing and since:
        out.append(canary_trial(template, host, run))
    return out


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
