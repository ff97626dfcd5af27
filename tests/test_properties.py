"""Property-based tests (hypothesis) of the pure readers and functions: whatever they are given, they answer
with a result or a typed RunnerError (one line for the user), never another exception; and what they answer
keeps its invariants (issue 14). Kept fast: few examples, no deadline (a loaded machine is not a failure),
no example database written into the work tree."""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
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
@example({"": None, "0E0": None})  # unknown keys of two types (0E0 reads as a number): sorting them raised TypeError
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
@example(2.2250738585072014e-308)  # the smallest normal number: shown as 2.225e-308, which parses back below it
@example(2.225073858507201e-308)  # the largest denormal
def test_numbers_never_show_denormals(v) -> None:
    text = number(v)
    if isinstance(v, float) and 0 < abs(v) < sys.float_info.min:
        assert text == "0"  # a denormal (e.g. a fitted 4.941e-324) is shown as 0
    assert "e-3" not in text or abs(v) >= sys.float_info.min  # only normal numbers keep such exponents


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


# ----- fit --csv: random shapes, through the command -----------------------------------------------------
CELLS = st.one_of(st.integers(-5, 100).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.sampled_from(["", " ", "nan", "inf", "1e999", "abc", '"1"', '"', '"2,5"', "0x10", "1_000", "٣", "+7"]),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=5))


@FAST
@given(st.lists(st.lists(CELLS, max_size=4), max_size=10), st.sampled_from(["\n", "\r\n", "\r"]), st.sampled_from(["n,x", "x,n", "n", "n,x,n", ""]))
def test_fit_command_on_random_csv_shapes(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
                                          rows: list[list[str]], newline: str, header: str) -> None:
    from runner.cli import main

    path = tmp_path_factory.mktemp("csv") / "runs.csv"
    path.write_bytes((newline.join([header, *(",".join(r) for r in rows)]) + newline).encode())
    rc = main(["fit", "usl", "--csv", str(path), "--x", "n", "--y", "x", "--bootstrap", "0"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if rc == 0:
        assert "sigma" in out and err == ""
    else:
        assert rc == 2 and err.startswith(f"runner: {path}: ") and err.count("\n") == 1, err


# ----- schedules file and schedule state ----------------------------------------------------------------
def _good_entry() -> dict:
    return {"name": "nightly", "matrix": str(PROJECT / "matrix.yml"), "cron": "0 2 * * *", "datasets": "/srv/ds",
            "inventory": None, "mode": "serve", "created": "2026-11-20T12:00:00+00:00"}


def _load_schedules(home: Path) -> None:
    from runner.lab import schedule as sch

    problems: list[str] = []
    try:
        found = sch.load_schedules(home, problems=problems)
    except UsageError as exc:
        assert str(exc).startswith(str(home / "schedules.yml")) and "\n" not in str(exc), str(exc)
        return
    assert all(isinstance(s, sch.Schedule) and s.name == name for name, s in found.items())
    assert all(p and "\n" not in p for p in problems), problems


@FAST
@given(st.binary(max_size=300))
def test_schedules_file_of_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    home = tmp_path_factory.mktemp("home")
    (home / "schedules.yml").write_bytes(data)
    _load_schedules(home)


@FAST
@given(st.data())
def test_schedules_file_with_any_entries(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Good entries with one value replaced, dropped or added, next to anything at all: each bad entry is one
    line of `problems`, the good ones load."""
    entries: list = []
    for _ in range(data.draw(st.integers(0, 3))):
        entry = _good_entry()
        key = data.draw(st.sampled_from([*entry, "extra"]))
        how = data.draw(st.sampled_from(["replace", "drop", "keep"]))
        if how == "replace":
            entry[key] = data.draw(values | st.text(alphabet="0123456789 */,-LW#@abc", max_size=14))
        elif how == "drop":
            entry.pop(key, None)
        if how == "keep":
            entry["name"] = f"good{len(entries)}"
        entries.append(entry)
    entries += data.draw(st.lists(values, max_size=2))
    version = data.draw(st.sampled_from([1, 1, 1, 2, None, "1"]))
    home = tmp_path_factory.mktemp("home")
    (home / "schedules.yml").write_text(yaml.safe_dump({"version": version, "schedules": entries}))
    _load_schedules(home)


@FAST
@given(st.binary(max_size=120) | values.map(lambda v: json.dumps(v).encode()))
def test_schedule_state_file_of_anything(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    from runner.lab import schedule as sch

    home = tmp_path_factory.mktemp("home")
    (home / "state").mkdir()
    (home / "state" / "n.json").write_bytes(data)
    try:
        slot = sch.last_run("n", home)
    except UsageError as exc:
        assert str(exc).startswith(str(home / "state" / "n.json")) and "\n" not in str(exc)
        return
    assert slot is not None and slot.tzinfo is not None


# ----- datasets on disk ----------------------------------------------------------------------------------------
META = {"schema_version": 5, "campaign": "c", "workload": "command", "matrix_sha256": "0" * 64,
        "axis_types": {"n": "int"}, "trials_planned": 2, "seed": 1, "created_at": "2026-01-01T00:00:00+00:00"}


@FAST
@given(st.one_of(st.binary(max_size=200), values.map(lambda v: json.dumps(v).encode()),
                 st.tuples(st.sampled_from(sorted(META)), values).map(lambda kv: json.dumps({**META, kv[0]: kv[1]}).encode())))
def test_dataset_description_of_anything(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """dataset.json damaged in any way: the dataset is refused with one line naming the file; a description
    that is accepted is one every reader can use."""
    from runner.records.schema import AXIS_TYPES, READABLE_SCHEMAS
    from runner.records.store import CampaignStore

    root = tmp_path_factory.mktemp("ds") / "c"
    root.mkdir()
    (root / "dataset.json").write_bytes(data)
    try:
        meta = CampaignStore(root).meta()
    except DatasetError as exc:
        assert str(exc).startswith(str(root)) and "\n" not in str(exc), str(exc)
        return
    assert meta["schema_version"] in READABLE_SCHEMAS and isinstance(meta["campaign"], str)
    assert all(kind in AXIS_TYPES for kind in meta["axis_types"].values())
    CampaignStore(root).read_table("metrics")  # the schema the description makes is a valid one


@FAST
@given(st.binary(max_size=200))
def test_campaign_json_files_of_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """provenance.json and a host's facts damaged: refused with one line naming the file, or read as an object."""
    from runner.records.store import CampaignStore

    root = tmp_path_factory.mktemp("ds") / "c"
    (root / "hosts").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(META))
    for name in ("provenance.json", "hosts/h1.json"):
        (root / name).write_bytes(data)
    store = CampaignStore(root)
    for read in (store.read_provenance, store.host_facts):
        try:
            assert isinstance(read(), dict)
        except DatasetError as exc:
            assert str(exc).startswith(str(root)) and "\n" not in str(exc), str(exc)


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive of a two-trial campaign written through CampaignStore (no host, no launch)."""
    from runner.records import share
    from runner.records.store import AttemptRecord, CampaignStore
    from runner.records.metric import Metric

    ds = tmp_path_factory.mktemp("made")
    store = CampaignStore(ds / "c")
    with store:
        store.initialise(campaign="c", workload="command", matrix_text="campaign: c\n", matrix_sha256="0" * 64,
                         axis_types={"n": "int"}, trial_count=2, seed=1, provenance={"controller": "ctl"})
        store.write_host_facts("h1", {"hostname": "h1", "cpus": 2})
        for n in (1, 2):
            store.write_attempt("c", "command", {"n": "int"}, AttemptRecord(
                trial_id=f"{n:016x}", cell_id=f"cell{n}", repetition=1, attempt=1, host="h1", status="ok", error=None,
                started_at=1.0, ended_at=2.0, wall_s=1.0, workload_wall_s=1.0, params={"n": n},
                metrics=(Metric("v", float(n), "ops/s"),)))
    return share.pack("c", tmp_path_factory.mktemp("archive") / "c.tar.gz", datasets=ds)


@FAST
@given(st.data())
def test_archive_damaged_anywhere(small_archive: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """An archive truncated, with bytes changed or replaced by random ones: verify and import refuse it with one
    line (DatasetError) and import writes nothing, or (bytes gzip ignores) it is still the same archive."""
    from runner.records import share

    blob = bytearray(small_archive.read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        for i in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=4)):
            blob[i] ^= data.draw(st.integers(1, 255))
    else:
        blob = bytearray(data.draw(st.binary(max_size=300)))
    work = tmp_path_factory.mktemp("damaged")
    path = work / "c.tar.gz"
    path.write_bytes(bytes(blob))
    for act in (lambda: share.verify(path), lambda: share.import_archive(path, work / "ds")):
        try:
            act()
        except DatasetError as exc:
            assert str(exc).startswith("c.tar.gz: ") and "\n" not in str(exc), str(exc)
            assert not (work / "ds").exists() or not any((work / "ds").iterdir())


# ----- small text formats: lock files, hold files, known_hosts, URLs ----------------------------------------------
@FAST
@given(st.text(max_size=200))
def test_lock_file_text(text: str) -> None:
    from runner.records.store import parse_lock

    holder = parse_lock(text)
    assert holder is None or (holder.line and "\n" not in holder.line and holder.process.pid >= 0)


@FAST
@given(st.text(max_size=200) | values.map(json.dumps), st.floats(0, 1e9))
def test_hold_file_text(text: str, age: float) -> None:
    from runner.lab.reservations import parse_hold

    info = parse_hold("h", "/p", text, age)
    assert info is None or "\n" not in info.describe()


@FAST
@given(st.binary(max_size=300))
def test_known_hosts_file_of_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    from runner.hosts.ssh import check_known_hosts_file

    path = tmp_path_factory.mktemp("kh") / "known_hosts"
    path.write_bytes(data)
    try:
        check_known_hosts_file(path)
    except UsageError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)


URL_CHARS = "abcs3filetph:/.@[]%?#~ 019-_"


@FAST
@given(st.text(alphabet=URL_CHARS, max_size=30), st.booleans(), st.text(alphabet=URL_CHARS, max_size=20) | st.none())
def test_share_url_is_checked_before_anything_connects(text: str, write: bool, endpoint: str | None) -> None:
    """Any URL and S3 endpoint: a filesystem, or one line (UsageError) naming what is wrong. sftp:// is left out:
    its backend connects when it is made, and these tests reach nothing but loopback."""
    from runner.records import share

    assume("sftp" not in text.lower())
    try:
        share.share_filesystem(text, write=write, s3_endpoint=endpoint)
    except UsageError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
