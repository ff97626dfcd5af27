"""Expand a matrix's axes into cells, and resolve values relative to a host's CPU count. Pure functions.

A cell is a dict {axis: value as written}. Expansion: every zip group is one dimension (its axes taken
position by position), every other axis is one dimension; the cells are the cross product of the
dimensions in the order the axes are written; `exclude` rules drop cells, `include` entries add cells.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")  # a value relative to the host's CPUs: '50%'


def normal_numbers(value: Any) -> Any:
    """`value` with every integral float made an int (2.0 -> 2), inside lists and mappings: equal numbers are one
    value, so `1`, `1.0` and `1e0` make one cell, one trial id, and `repetitions: 2.0` is 2. Booleans stay."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:  # larger: kept a float (int64 columns)
        return int(value)
    if isinstance(value, list | tuple):
        return type(value)(normal_numbers(v) for v in value)
    if isinstance(value, dict):
        return {normal_numbers(k): normal_numbers(v) for k, v in value.items()}
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equal as matrix values: 2 is 2.0, but true is not 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)

Cell = dict[str, Any]


def expand_cells(
    axes: Mapping[str, Sequence[Any]],
    zip_groups: Sequence[Sequence[str]] = (),
    exclude: Sequence[Mapping[str, Any]] = (),
    include: Sequence[Mapping[str, Any]] = (),
) -> list[Cell]:
    group_of = {axis: tuple(group) for group in zip_groups for axis in group}
    dims: list[tuple[str, ...]] = []
    for axis in axes:
        dim = group_of.get(axis, (axis,))
        if dim not in dims:
            dims.append(dim)
    choices = [
        [dict(zip(dim, values, strict=True)) for values in zip(*(axes[a] for a in dim), strict=True)] for dim in dims
    ]
    cells: list[Cell] = []
    seen: set[str] = set()
    for combo in itertools.product(*choices):
        cell: Cell = {}
        for part in combo:
            cell.update(part)
        cell = {axis: cell[axis] for axis in axes}  # keep the written axis order
        if any(_matches(cell, rule) for rule in exclude):
            continue
        _add(cells, seen, cell)
    for extra in include:
        _add(cells, seen, {axis: extra[axis] for axis in axes})
    return cells


def _add(cells: list[Cell], seen: set[str], cell: Cell) -> None:
    key = json.dumps(normal_numbers(cell), sort_keys=True)  # 1 and 1.0 are one cell
    if key not in seen:
        seen.add(key)
        cells.append(cell)


def _matches(cell: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    return all(k in cell and same_value(cell[k], v) for k, v in rule.items())


def is_relative(value: Any) -> bool:
    return isinstance(value, str) and PERCENT.fullmatch(value) is not None


def resolve_value(value: Any, cpus: int) -> Any:
    """'50%' of 8 CPUs -> 4; at least 1; other values unchanged."""
    if not is_relative(value):
        return value
    pct = float(PERCENT.fullmatch(value).group(1))
    return max(1, round(pct * cpus / 100.0))


def resolve_params(params: Mapping[str, Any], cpus: int, relative_keys: frozenset[str]) -> dict[str, Any]:
    return {k: (resolve_value(v, cpus) if k in relative_keys else v) for k, v in params.items()}


def uses_relative(params: Mapping[str, Any]) -> bool:
    return any(is_relative(v) for v in params.values())
