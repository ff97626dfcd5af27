"""Read and validate a matrix file. The only place that parses matrix YAML.

`load_matrix(path)` returns a `Matrix` (plain, frozen data) or raises `MatrixError` whose message is one line:
`<file>: <key path>: <bad value> <what is wrong>; <what is allowed>`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from runner import defaults
from runner.errors import MatrixError, UsageError
from runner.matrix.expand import PERCENT, expand_cells, normal_numbers, same_value
from runner.probes import base as probes
from runner.provision import environments, kernel
from runner.records.schema import RESERVED
from runner.textfile import Yaml12Loader, load_yaml, read_text
from runner.workloads import base as workloads


# Parameters the runner itself understands (environments and guests), allowed in axes and workload.params
# next to the workload's own. See docs/matrix.md.
RUNNER_PARAMS_SCHEMA: dict[str, Any] = {
    "env": {"enum": list(environments.known()), "description": f"where the workload runs (default {defaults.ENV})"},
    "vcpus": {"x-cpus": True, "type": "integer", "minimum": 1, "description": "vCPUs of each guest / CPUs of a container; on the bare host, what relative CPU counts of the workload (\"100%\") are taken of"},
    "vms": {"type": "integer", "minimum": 1, "maximum": 64, "description": f"guests started at once on one host (over-commit; default {defaults.VMS})"},
    "guest_kernel": {"type": "string", "description": "entry of the guest kernel catalog"},
    "guest_image": {"type": "string", "description": "entry of the guest image catalog: minimal (default), debian, or one of guest_images"},
    "memory": {"type": "integer", "minimum": defaults.GUEST_MEMORY_MIN_MIB,
               "description": f"guest memory in MiB (default {defaults.GUEST_MEMORY_MIB})"},
    "pin": {"enum": ["packed", "spread", "none"], "description": "vCPU pinning policy"},
    "guest_numa": {"type": "integer", "minimum": 1, "description": "virtual NUMA nodes of each guest"},
}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 2
    on: frozenset[str] = frozenset({"failed", "timeout", "host"})


@dataclass(frozen=True)
class AdaptiveRepetitions:
    """`repetitions: {min, max, ci}`: every cell gets `min` repetitions; then rounds of more go to the cells
    whose 95% interval of the median (of `metric`; None: the default, see runner.analysis.adaptive) is wider
    than +-ci relative to it, until it is tight or the cell has `max`."""

    min: int
    max: int
    ci: float = 0.05
    metric: str | None = None


@dataclass(frozen=True)
class Canary:
    """`canary: {cell: {...}, every: N, minutes: M}`: one cell of the matrix, re-run on each host before its
    first trial, then after every `every` trials or `minutes` minutes, whichever comes first (at least one of
    them is given), and once after the host's last trial, to watch the host drift (runner.execution.canary).
    `cell` holds a value of every axis, as written (the matrix file may leave out axes with one value)."""

    cell: Mapping[str, Any]
    every: int | None  # None: only the minutes count
    metric: str | None = None  # what the report watches; None: throughput, else the first higher-is-better metric
    minutes: float | None = None  # None: only the trials count


@dataclass(frozen=True)
class Matrix:
    """A validated matrix file. Axis values are kept as written ("50%" stays a string until a host is known)."""

    path: Path
    text: str
    campaign: str
    workload: str
    params: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    zip: tuple[tuple[str, ...], ...] = ()
    exclude: tuple[Mapping[str, Any], ...] = ()
    include: tuple[Mapping[str, Any], ...] = ()
    repetitions: int = 3
    timeout: float = 600.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    order: str = "interleave"
    seed: int = 0
    hosts: str = "local"
    placement: str = "pool"
    inventory: str | None = None
    busy: str = "wait"
    busy_timeout: float | None = None
    provision: Mapping[str, Any] | None = None  # None: no Ansible step before the trials
    guest_kernels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    guest_images: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reuse: str = "configuration"  # guests.reuse: configuration | trial
    description: str = ""
    adaptive: AdaptiveRepetitions | None = None  # repetitions given as bounds; `repetitions` is then its min
    probes: tuple[str, ...] = ()  # telemetry probes run around every trial (runner.probes)
    canary: Canary | None = None  # the drift watch: one cell re-run every N trials on each host

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def param_schema(self) -> Mapping[str, Any]:
        """Schema of every parameter name (workload's own and the runner's)."""
        return _param_properties(self.workload)


@cache
def matrix_schema() -> dict[str, Any]:
    """schema.json without its editors' part (`allOf`: workload names and parameters, runner.matrix.editor_schema),
    which parse_matrix checks itself, parameter by parameter, naming the allowed values."""
    schema = json.loads(resources.files("runner.matrix").joinpath("schema.json").read_text())
    schema.pop("allOf", None)
    return schema


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    return parse_matrix(read_text(path, "matrix file"), path)


def read_yaml(text: str) -> Any:
    """A matrix file's YAML as the runner reads it (YAML 1.2 booleans: `on:` stays the key "on"; duplicate keys,
    alias bombs, NaN and infinity raise yaml.YAMLError)."""
    return normal_numbers(yaml.load(text, Loader=Yaml12Loader))  # noqa: S506 - a SafeLoader subclass


# The most trials a matrix may expand to (cells before `exclude` x repetitions): counted before expanding,
# so a matrix that would take more memory than the machine has is one line with its size.
MAX_TRIALS = 1_000_000


def _check_size(axes: Mapping[str, tuple[Any, ...]], zips: tuple[tuple[str, ...], ...], n_include: int, repetitions: int, name: str) -> None:
    zipped = {a for group in zips for a in group}
    cells = 1
    for group in zips:
        cells *= len(axes[group[0]])
    for axis, values in axes.items():
        if axis not in zipped:
            cells *= len(values)
    cells += n_include
    if cells * repetitions > MAX_TRIALS:
        raise MatrixError(f"{name}: axes: the matrix expands to {cells} cells x {repetitions} repetitions = {cells * repetitions} "
                          f"trials, more than the {MAX_TRIALS} a campaign may plan; use fewer axis values or split the campaign")


def parse_matrix(text: str, path: Path = Path("matrix.yml")) -> Matrix:
    name = str(path)
    doc = normal_numbers(load_yaml(text, name, "matrix file", loader=Yaml12Loader, error=MatrixError, line_first=True))
    if doc is None:
        raise MatrixError(f"{name}: the file is empty; a matrix needs at least 'campaign' and 'workload'")
    if not isinstance(doc, dict):
        raise MatrixError(f"{name}: the file must be a mapping with at least 'campaign' and 'workload'")

    _check(doc, matrix_schema(), name, "")
    workload = doc["workload"]["name"]
    props = _param_properties(workload)  # raises UnknownNameError for a bad workload name
    props_known = ", ".join(sorted(props))
    if _allows_extra(workload):  # e.g. the command workload: any parameter name becomes $RUNNER_<NAME>
        names = set(doc["workload"].get("params") or {}) | set(doc.get("axes") or {})
        props.update({key: {} for key in names if key not in props})

    params = dict(doc["workload"].get("params") or {})
    for key, value in params.items():
        if key not in props:
            raise MatrixError(f"{name}: workload.params.{key}: unknown parameter of workload {workload!r}; known: {props_known}")
        _check_value(value, props[key], name, f"workload.params.{key}")

    axes = {k: tuple(v) for k, v in (doc.get("axes") or {}).items()}
    for key, values in axes.items():
        if key not in props:
            raise MatrixError(f"{name}: axes.{key}: unknown parameter of workload {workload!r}; known: {props_known}")
        if key in RESERVED and key not in RUNNER_PARAMS_SCHEMA:
            raise MatrixError(f"{name}: axes.{key}: {key!r} is a column of the dataset; give the parameter another name")
        if key in params:
            raise MatrixError(f"{name}: axes.{key}: also set in workload.params; set it in one place")
        for i, value in enumerate(values):
            _check_value(value, props[key], name, f"axes.{key}[{i}]")
        seen: set[str] = set()
        for i, value in enumerate(values):
            canon = json.dumps(value)
            if canon in seen:
                raise MatrixError(f"{name}: axes.{key}[{i}]: {value!r} appears twice; values of an axis must differ")
            seen.add(canon)

    zips = tuple(tuple(group) for group in doc.get("zip") or ())
    zipped: set[str] = set()
    for gi, group in enumerate(zips):
        for ai, axis in enumerate(group):
            if axis not in axes:
                raise MatrixError(f"{name}: zip[{gi}][{ai}]: {axis!r} is not an axis; axes: {', '.join(axes) or 'none'}")
            if axis in zipped:
                raise MatrixError(f"{name}: zip[{gi}][{ai}]: axis {axis!r} is in two zip groups")
            zipped.add(axis)
        lengths = {axis: len(axes[axis]) for axis in group}
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{a}={n}" for a, n in lengths.items())
            raise MatrixError(f"{name}: zip[{gi}]: zipped axes must have the same number of values; got {detail}")

    reps = doc.get("repetitions", 3)
    _check_size(axes, zips, len(doc.get("include") or ()), reps["max"] if isinstance(reps, Mapping) else reps, name)
    for kind in ("exclude", "include"):
        for ri, rule in enumerate(doc.get(kind) or ()):
            for key, value in rule.items():
                if key not in axes:
                    raise MatrixError(f"{name}: {kind}[{ri}].{key}: not an axis; axes: {', '.join(axes) or 'none'}")
                if kind == "include":
                    _check_value(value, props[key], name, f"include[{ri}].{key}")
                elif not any(same_value(value, x) for x in axes[key]):  # a typo would exclude nothing, in silence
                    raise MatrixError(f"{name}: exclude[{ri}].{key}: {value!r} is not a value of axis {key!r}; "
                                      f"its values: {', '.join(map(repr, axes[key]))}")
            if kind == "include":
                missing = [a for a in axes if a not in rule]
                if missing:
                    raise MatrixError(f"{name}: include[{ri}]: an included cell must name every axis; missing: {', '.join(missing)}")

    plugin = workloads.get(workload)
    if (missing := plugin.missing()) is not None:
        raise MatrixError(f"{name}: workload.name: workload {workload!r} cannot run here: {missing}")
    try:  # every cell: a check may depend on a combination (stressng: env kvm with the minimal image)
        for cell in expand_cells(axes, zips, tuple(doc.get("exclude") or ()), tuple(doc.get("include") or ())) or [{}]:
            plugin.validate({**params, **cell})
    except UsageError as exc:
        raise MatrixError(f"{name}: {exc}") from None

    hosts = doc.get("hosts", "local")
    if isinstance(hosts, str):
        hosts = {"group": hosts}
    retry = doc.get("retry") or {}
    campaign = doc["campaign"]
    adaptive = _adaptive(doc.get("repetitions", 3), name)
    seed = doc.get("seed")
    if seed is None:
        seed = int(hashlib.sha256(campaign.encode()).hexdigest()[:8], 16)
    return Matrix(
        path=path,
        text=text,
        campaign=campaign,
        workload=workload,
        params=params,
        axes=axes,
        zip=zips,
        exclude=tuple(doc.get("exclude") or ()),
        include=tuple(doc.get("include") or ()),
        repetitions=adaptive.min if adaptive is not None else doc.get("repetitions", 3),
        timeout=float(doc.get("timeout", 600)),
        retry=RetryPolicy(
            attempts=retry.get("attempts", 2),
            on=frozenset(retry.get("on", ("failed", "timeout", "host"))),
        ),
        order=doc.get("order", "interleave"),
        seed=seed,
        hosts=hosts["group"],
        placement=hosts.get("placement", "pool"),
        inventory=hosts.get("inventory"),
        busy=hosts.get("busy", "wait"),
        busy_timeout=hosts.get("busy_timeout"),
        provision=_provision(doc.get("provision", False)),
        guest_kernels=_guest_kernels(doc, axes, params, name),
        guest_images=_guest_images(doc, axes, params, name),
        reuse=(doc.get("guests") or {}).get("reuse", "configuration"),
        description=doc.get("description", ""),
        adaptive=adaptive,
        probes=_probes(doc.get("probes") or (), name),
        canary=_canary(doc.get("canary"), axes, zips, tuple(doc.get("exclude") or ()), tuple(doc.get("include") or ()), name),
    )


def _adaptive(value: int | Mapping[str, Any], name: str) -> AdaptiveRepetitions | None:
    """`repetitions` as bounds (None for a plain count), with its limits checked: one line naming the file."""
    if not isinstance(value, Mapping):
        return None
    lo, hi, ci = value["min"], value["max"], value.get("ci", 0.05)
    if lo > hi:
        raise MatrixError(f"{name}: repetitions: min {lo} > max {hi}; min must be at most max")
    if isinstance(ci, bool) or not 0 < ci < 1:
        raise MatrixError(f"{name}: repetitions.ci: {ci!r} is outside (0, 1); give the relative half-width of the interval, e.g. 0.05 for +-5%")
    return AdaptiveRepetitions(lo, hi, float(ci), value.get("metric"))


def _probes(names: Any, name: str) -> tuple[str, ...]:
    """The matrix's probes; an unknown name is one line listing the known ones."""
    known = probes.known()
    for i, probe in enumerate(names):
        if probe not in known:
            raise MatrixError(f"{name}: probes[{i}]: no probe {probe!r}; known: {', '.join(known)}")
    return tuple(names)


def _canary(
    value: Mapping[str, Any] | None,
    axes: Mapping[str, tuple[Any, ...]],
    zips: tuple[tuple[str, ...], ...],
    exclude: tuple[Mapping[str, Any], ...],
    include: tuple[Mapping[str, Any], ...],
    name: str,
) -> Canary | None:
    """The matrix's canary: its `cell` must name exactly one cell of the expanded matrix (values as written);
    anything else is one line naming the file, the key and the value."""
    if value is None:
        return None

    wanted = dict(value["cell"])
    for key, v in wanted.items():
        if key not in axes:
            raise MatrixError(f"{name}: canary.cell.{key}: not an axis; axes: {', '.join(axes) or 'none'}")
        if not any(same_value(v, x) for x in axes[key]):
            raise MatrixError(f"{name}: canary.cell.{key}: {v!r} is not a value of axis {key!r}; "
                              f"its values: {', '.join(map(repr, axes[key]))}")
    found = [c for c in expand_cells(axes, zips, exclude, include) if all(same_value(c[k], v) for k, v in wanted.items())]
    if not found:
        raise MatrixError(f"{name}: canary.cell: {_flow(wanted)} names no cell of the matrix "
                          "(exclude drops it, or the zipped axes never pair these values)")
    if len(found) > 1:
        open_axes = [a for a in axes if a not in wanted]
        raise MatrixError(f"{name}: canary.cell: {_flow(wanted)} names {len(found)} cells of the matrix; "
                          f"give a value of every axis that varies (also {', '.join(open_axes)})")
    every, minutes = value.get("every"), value.get("minutes")
    if every is None and minutes is None:
        raise MatrixError(f"{name}: canary: neither 'every' nor 'minutes' is given; give trials between two canary runs "
                          "(every: 10), minutes (minutes: 30) or both (a canary run is due when either is reached)")
    return Canary(cell=dict(found[0]), every=None if every is None else int(every), metric=value.get("metric"),
                  minutes=None if minutes is None else float(minutes))


def _flow(cell: Mapping[str, Any]) -> str:
    """A cell as YAML flow text for messages: {threads: 4, lock: ticket}."""
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in cell.items()) + "}"


BUILTIN_GUEST_KERNELS = ("default", "nopvspin")


def _guest_kernels(doc: Mapping[str, Any], axes: Mapping[str, tuple[Any, ...]], params: Mapping[str, Any], name: str) -> dict[str, dict[str, str]]:
    """The matrix's guest kernel catalog; every guest_kernel value used must be in it or built in."""
    catalog = {k: dict(v) for k, v in (doc.get("guest_kernels") or {}).items()}
    for key, entry in catalog.items():
        if key in BUILTIN_GUEST_KERNELS:
            raise MatrixError(f"{name}: guest_kernels.{key}: {key!r} is built in; give your kernel another name")
        if "build" in entry:  # a recipe (issue 22): validated, its files checked, its paths made absolute
            catalog[key] = _kernel_recipe(key, entry, Path(name).resolve().parent, name)
            continue
        if not entry["kernel"].startswith("/"):
            raise MatrixError(f"{name}: guest_kernels.{key}.kernel: {entry['kernel']!r} is not an absolute path")
    known = [*BUILTIN_GUEST_KERNELS, *sorted(catalog)]
    used = [(f"axes.guest_kernel[{i}]", v) for i, v in enumerate(axes.get("guest_kernel", ()))]
    if "guest_kernel" in params:
        used.append(("workload.params.guest_kernel", params["guest_kernel"]))
    for path, value in used:
        if value not in known:
            raise MatrixError(f"{name}: {path}: no guest kernel {value!r}; known: {', '.join(known)} (add it under guest_kernels)")
    return catalog


def _kernel_recipe(key: str, entry: Mapping[str, Any], base: Path, name: str) -> dict[str, Any]:
    """A guest_kernels recipe entry as the trials carry it (runner.provision.kernel checks it)."""
    recipe = kernel.parse_recipe(key, entry, base, name)
    kernel.check_files(recipe, name)
    doc = recipe.to_json()
    build = {k: doc[k] for k in ("source", "ref", "patches", "config", "fragments", "set", "build_host") if doc[k] not in (None, [], {})}
    return {"build": build, **({"cmdline": recipe.cmdline} if recipe.cmdline else {})}


BUILTIN_GUEST_IMAGES = ("minimal", "debian")


def _guest_images(doc: Mapping[str, Any], axes: Mapping[str, tuple[Any, ...]], params: Mapping[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """The matrix's guest image catalog; every guest_image value used must be in it or built in."""
    catalog = {k: dict(v) for k, v in (doc.get("guest_images") or {}).items()}
    for key, entry in catalog.items():
        if key in BUILTIN_GUEST_IMAGES:
            raise MatrixError(f"{name}: guest_images.{key}: {key!r} is built in; give your image another name")
        if "file" in entry and not entry["file"].startswith("/"):
            raise MatrixError(f"{name}: guest_images.{key}.file: {entry['file']!r} is not an absolute path")
        if "host_key" in entry and not re.fullmatch(r"ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+( .*)?", entry["host_key"].strip()):
            raise MatrixError(f"{name}: guest_images.{key}.host_key: not a public key line (ssh-ed25519 AAAA...)")
    known = [*BUILTIN_GUEST_IMAGES, *sorted(catalog)]
    used = [(f"axes.guest_image[{i}]", v) for i, v in enumerate(axes.get("guest_image", ()))]
    if "guest_image" in params:
        used.append(("workload.params.guest_image", params["guest_image"]))
    for path, value in used:
        if value not in known:
            raise MatrixError(f"{name}: {path}: no guest image {value!r}; known: {', '.join(known)} (add it under guest_images)")
    return catalog


def _provision(value: bool | Mapping[str, Any]) -> Mapping[str, Any] | None:
    if value is False:
        return None
    return {} if value is True else dict(value)


def _param_properties(workload: str) -> dict[str, Any]:
    plugin = workloads.get(workload)
    props = dict(plugin.params_schema.get("properties", {}))
    for key, schema in RUNNER_PARAMS_SCHEMA.items():
        props.setdefault(key, schema)
    return props


def _allows_extra(workload: str) -> bool:
    return workloads.get(workload).params_schema.get("additionalProperties", False) is not False


def _check_value(value: Any, schema: Mapping[str, Any], name: str, path: str) -> None:
    """Validate one parameter value; CPU-count parameters (x-cpus) may also be percentages like "50%"."""
    if schema.get("x-cpus") and isinstance(value, str):
        m = PERCENT.fullmatch(value)
        if m and float(m.group(1)) > 0:
            return
        raise MatrixError(f"{name}: {path}: {value!r} is not a CPU count; allowed: an integer >= 1 or a percentage of the host's CPUs like '50%'")
    _check(value, {k: v for k, v in schema.items() if not k.startswith("x-")}, name, path)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Any:
    """JSON Schema's `pattern`, with `$` at its end meaning the end of the string (as in ECMA-262): Python's `$`
    also matches before a trailing newline, which would let "name\\n" through `^[a-z]+$`."""
    anchored = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    if isinstance(instance, str) and not re.search(anchored, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})


def _check(doc: Any, schema: Mapping[str, Any], name: str, base: str) -> None:
    validator = _Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return
    path = base
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    raise MatrixError(f"{name}: {path or '(top level)'}: {_describe(error)}")


def _describe(error: jsonschema.ValidationError) -> str:
    v, schema, value = error.validator, error.schema, error.instance
    if v == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        extra = sorted(set(value) - set(schema.get("properties", {})), key=str)
        return f"unknown key {extra[0]!r}; allowed: {allowed}"
    if v == "required":
        return error.message.replace("is a required property", "is required but missing")
    if v == "enum":
        return f"{value!r} is not allowed; allowed: {', '.join(map(str, schema['enum']))}"
    if v == "type":
        want = schema["type"]
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{value!r} is not {'an' if want[0] in 'aeiou' else 'a'} {want}"
    if v == "pattern":
        return f"{value!r} is not allowed; it must match {schema['pattern']}"
    if v == "propertyNames":
        return f"{error.message}; names are lower case letters, digits and _"
    if v in ("minimum", "maximum", "exclusiveMinimum", "minItems", "minProperties", "const", "oneOf"):
        return error.message
    return error.message
