"""Property-based tests (hypothesis) of the pure readers and functions: whatever they are given, they answer
with a result or a typed RunnerError (one line for the user), never another exception; and what they answer
keeps its invariants (issue 14). Kept fast: few examples, no deadline (a loaded machine is not a failure),
no example database written into the work tree."""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner.analysis.fmt import number
from runner.analysis.stats import bootstrap_ci, cell_stats, repetitions_needed
from runner.analysis.usl import fit_usl
from runner.cli import number_between
from runner.cli.fit import read_columns
from runner.errors import DatasetError, RunnerError, TrialError, UsageError
from runner.fairness import jain, jain_from_sums
from runner.matrix.load import load_matrix, parse_matrix
from runner.workloads.lockbench.parse import parse_output, to_metrics

PROJECT = Path(__file__).resolve().parents[1]
LOCKBENCH = PROJECT / "tests" / "data" / "lockbench"
FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# JSON-like values: what a YAML or JSON document may hold anywhere.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
YAML_CHARS = "abcxyz019 :-[]{},#&*!|>'\"%@`?\n\t\\.é%"


def _project_matrix() -> dict:
    return yaml.safe_load((PROJECT / "matrix.yml").read_text())


def _paths(doc, prefix=()):
    """Every key path of a nested dict/list document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _parse(text: str) -> None:
    try:
        parse_matrix(text)
    except RunnerError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), repr(str(exc))


# ----- matrix files -----------------------------------------------------------------------------------------
@FAST
@given(st.text(alphabet=YAML_CHARS, max_size=200))
def test_matrix_from_yaml_ish_text(text: str) -> None:
    _parse(text)


@FAST
@given(values)
def test_matrix_from_any_yaml_document(doc) -> None:
    _parse(yaml.safe_dump(doc))


@FAST
@given(st.data())
def test_matrix_with_one_value_replaced(data: st.DataObject) -> None:
    """The project's own matrix with one value anywhere replaced by anything: valid or one line of MatrixError."""
    doc = _project_matrix()
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    target = doc
    for key in path[:-1]:
        target = target[key]
    new = copy.deepcopy(data.draw(values))
    if data.draw(st.booleans()) and isinstance(target, dict):
        target.pop(path[-1])  # or leave it out
    else:
        target[path[-1]] = new
    _parse(yaml.safe_dump(doc))


@FAST
@given(st.binary(max_size=300))
def test_matrix_file_of_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("m") / "matrix.yml"
    path.write_bytes(data)
    try:
        load_matrix(path)
    except RunnerError as exc:
        assert isinstance(exc, UsageError) and str(exc).startswith(str(path))


# ----- lockbench output -------------------------------------------------------------------------------------
GOOD = sorted(p for p in LOCKBENCH.glob("*_t[0-9].json"))


@FAST
@given(st.sampled_from(GOOD), st.data())
def test_lockbench_parse_of_mutated_output(path: Path, data: st.DataObject) -> None:
    doc = json.loads(path.read_text())
    key = data.draw(st.sampled_from(sorted(doc)))
    how = data.draw(st.sampled_from(["drop", "replace", "truncate", "scale"]))
    if how == "drop":
        del doc[key]
        text = json.dumps(doc)
    elif how == "replace":
        doc[key] = data.draw(values)
        text = json.dumps(doc)
    elif how == "scale" and isinstance(doc[key], (int, float)) and not isinstance(doc[key], bool):
        doc[key] = doc[key] * data.draw(st.sampled_from([-1, 0, 2, 0.5, 1e300]))
        text = json.dumps(doc)
    else:
        text = json.dumps(doc)
        text = text[:data.draw(st.integers(0, len(text)))]
    try:
        parsed = parse_output(text)
    except TrialError as exc:
        assert str(exc).startswith("lockbench output: ") and "\n" not in str(exc)
        return
    metrics = to_metrics(parsed)
    totals = {m.name: m.value for m in metrics if m.thread is None}
    assert totals["throughput"] >= 0 and 0 < totals["jain_fairness"] <= 1 + 1e-9


@FAST
@given(st.text(max_size=200))
def test_lockbench_parse_of_any_text(text: str) -> None:
    with pytest.raises(TrialError):
        parse_output(text)


# ----- USL fit ----------------------------------------------------------------------------------------------
loads = st.lists(st.one_of(st.integers(-2, 64).map(float), st.sampled_from([math.nan, math.inf, 0.5])),
                 min_size=0, max_size=12)


@FAST
@given(loads, st.data())
def test_fit_usl_answers_or_refuses(n: list[float], data: st.DataObject) -> None:
    x = data.draw(st.lists(st.floats(-1e3, 1e9) | st.sampled_from([math.nan, math.inf, 0.0]),
                           min_size=len(n), max_size=len(n)))
    try:
        fit = fit_usl(n, x, bootstrap=data.draw(st.sampled_from([0, 20])), seed=1)
    except DatasetError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert 0 <= fit.sigma <= 1 and fit.kappa >= 0 and fit.gamma >= 0
    assert fit.peak_n >= 0  # 0 when sigma = 1: no peak
    for lo, hi in (fit.sigma_ci, fit.kappa_ci, fit.gamma_ci):
        assert (math.isnan(lo) and math.isnan(hi)) or lo <= hi


@FAST
@given(st.lists(st.tuples(st.integers(1, 32), st.floats(1, 1e6)), min_size=3, max_size=20))
def test_fit_usl_on_positive_data_always_fits(points: list[tuple[int, float]]) -> None:
    n, x = zip(*points)
    assume(len(set(n)) >= 3)
    fit = fit_usl(n, x, bootstrap=0)
    assert np.all(np.isfinite(fit.predict(np.array(sorted(set(n)), dtype=float))))


@FAST
@given(st.binary(max_size=200))
def test_fit_csv_of_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("csv") / "runs.csv"
    path.write_bytes(b"n,x\n" + data)
    try:
        n, x = read_columns(path, "n", "x")
    except UsageError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    assert len(n) == len(x) > 0 and all(v > 0 and math.isfinite(v) for v in n + x)


# ----- statistics -------------------------------------------------------------------------------------------
@FAST
@given(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8), min_size=1, max_size=5))
def test_cell_stats_invariants(cells: list[list[float]]) -> None:
    rows = [{"cell_id": f"c{i}", "repetition": r, "metric": "m", "value": v, "threads": i}
            for i, vals in enumerate(cells) for r, v in enumerate(vals, 1)]
    st_ = cell_stats(pd.DataFrame(rows))
    assert len(st_) == len(cells)
    for r in st_.itertuples():
        assert r.min <= r.q1 <= r.median <= r.q3 <= r.max
        assert r.n == len(cells[int(r.threads)])
        assert r.reps_needed == -1 or r.reps_needed >= r.n


@FAST
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30), st.integers(0, 2**32 - 1))
def test_bootstrap_interval_lies_within_the_data(x: list[float], seed: int) -> None:
    lo, hi = bootstrap_ci(x, n_boot=200, seed=seed)
    assert min(x) <= lo <= hi <= max(x)
    assert (lo, hi) == bootstrap_ci(x, n_boot=200, seed=seed)


@FAST
@given(st.lists(st.floats(1, 1e6), min_size=1, max_size=10), st.lists(st.floats(1, 1e6), min_size=1, max_size=10))
def test_two_sample_bootstrap_of_a_ratio(a: list[float], b: list[float]) -> None:
    lo, hi = bootstrap_ci((a, b), lambda x, y, axis: np.median(y, axis=axis) / np.median(x, axis=axis), n_boot=200)
    assert min(b) / max(a) * (1 - 1e-9) <= lo <= hi <= max(b) / min(a) * (1 + 1e-9)


@FAST
@given(st.floats(0, 1e300) | st.sampled_from([math.nan, math.inf]), st.integers(-1, 100))
def test_repetitions_needed(rel: float, n: int) -> None:
    need = int(repetitions_needed(rel, n))
    assert need == -1 or need >= n


@FAST
@given(st.lists(st.floats(0, 1e9), min_size=1, max_size=50))
def test_jain_index_bounds(x: list[float]) -> None:
    j = jain(x)
    assert 1 / len(x) - 1e-9 <= j <= 1 + 1e-9
    arr = np.array(x)
    assert jain_from_sums(arr.sum(), (arr * arr).sum(), arr.size) == pytest.approx(j, rel=1e-9)


@FAST
@given(st.lists(st.floats(allow_nan=True), min_size=0, max_size=5))
def test_jain_refuses_what_has_no_index(x: list[float]) -> None:
    assume(not x or any(not math.isfinite(v) or v < 0 for v in x))
    with pytest.raises(ValueError):
        jain(x)


# ----- numbers for people and option values -------------------------------------------------------------------
@FAST
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.none())
def test_numbers_never_show_denormals(v) -> None:
    text = number(v)
    assert "e-3" not in text or abs(float(text)) >= 2.2250738585072014e-308


@FAST
@given(st.text(max_size=12))
def test_q_option_type(text: str) -> None:
    parse = number_between(0, 1)
    try:
        q = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert "allowed: a number greater than 0 and less than 1" in str(exc)
        return
    assert 0 < q < 1
