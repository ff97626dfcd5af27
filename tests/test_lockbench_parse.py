"""parse_output / to_metrics / jain on real lockbench output captured in tests/data/lockbench/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import TrialError
from runner.workloads.lockbench.parse import jain, parse_output, to_metrics

DATA = Path(__file__).parent / "data" / "lockbench"
GOOD = ["ttas_t3", "ticket_t1", "ticket_t3", "mcs_t2", "mutex_t3", "oticket_t3", "spinpark_t3"]


def _text(name: str) -> str:
    return (DATA / f"{name}.json").read_text()


def _doc(name: str) -> dict:
    return json.loads(_text(name))


@pytest.mark.parametrize("name", GOOD)
def test_parse_real_output(name: str) -> None:
    doc = parse_output(_text(name))
    lock, threads = name.split("_t")
    assert doc["lock"] == lock
    assert doc["threads"] == int(threads)
    assert doc["counter_ok"] is True
    assert sum(doc["per_thread_ops"]) == doc["total_ops"] > 0


@pytest.mark.parametrize("name", GOOD)
def test_to_metrics_real_output(name: str) -> None:
    doc = parse_output(_text(name))
    metrics = to_metrics(doc)
    totals = {m.name: m for m in metrics if m.thread is None}
    assert set(totals) == {"throughput", "total_ops", "jain_fairness", "duration_s"}
    assert totals["throughput"].value == doc["throughput_ops_s"]
    assert (totals["throughput"].unit, totals["throughput"].higher_is_better) == ("ops/s", True)
    assert (totals["total_ops"].value, totals["total_ops"].unit) == (doc["total_ops"], "ops")
    assert totals["jain_fairness"].unit == "index"
    assert totals["jain_fairness"].value == pytest.approx(doc["jain_fairness"], abs=1e-5)
    assert (totals["duration_s"].unit, totals["duration_s"].higher_is_better) == ("s", None)
    per_thread = [m for m in metrics if m.thread is not None]
    assert [m.thread for m in per_thread] == list(range(doc["threads"]))
    assert [m.value for m in per_thread] == doc["per_thread_ops"]
    assert all(m.name == "thread_ops" and m.unit == "ops" for m in per_thread)


def test_ticket_collapses_past_the_cores_in_captured_output() -> None:
    # Captured on 2 cores: 1 thread vs 3 threads (lock-waiter preemption).
    assert _doc("ticket_t3")["throughput_ops_s"] < _doc("ticket_t1")["throughput_ops_s"] / 10


def _error(text: str) -> str:
    with pytest.raises(TrialError) as info:
        parse_output(text)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("lockbench output: ")
    return msg


def test_truncated_output() -> None:
    assert "not one JSON object" in _error(_text("truncated"))


def test_counter_mismatch_from_a_lock_that_breaks_mutual_exclusion() -> None:
    doc = _doc("none_t2_counter_mismatch")
    msg = _error(_text("none_t2_counter_mismatch"))
    assert "counter_ok is false" in msg and f"counter {doc['counter']}" in msg and "'none'" in msg


@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_output(text: str) -> None:
    assert _error(text) == "lockbench output: empty"


def test_two_objects_or_trailing_text() -> None:
    assert "not one JSON object" in _error(_text("mcs_t2") + _text("mcs_t2"))
    assert "not one JSON object" in _error(_text("mcs_t2") + "lockbench: oops")


def test_not_an_object() -> None:
    assert "expected a JSON object, got list" in _error("[1, 2]")


def test_missing_keys() -> None:
    doc = _doc("mcs_t2")
    del doc["total_ops"], doc["counter_ok"]
    assert _error(json.dumps(doc)).endswith("missing keys: total_ops, counter_ok")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("threads", True, "threads: True is not of type int"),
        ("threads", 2.0, "threads: 2.0 is not of type int"),
        ("counter_ok", 1, "counter_ok: 1 is not of type bool"),
        ("duration_s", "0.3", "duration_s: '0.3' is not of type int/float"),
        ("per_thread_ops", {"0": 1}, "per_thread_ops: {'0': 1} is not of type list"),
    ],
)
def test_wrong_types(key: str, value: object, expected: str) -> None:
    doc = _doc("mcs_t2")
    doc[key] = value
    assert _error(json.dumps(doc)).endswith(expected)


def test_unknown_format_version() -> None:
    doc = _doc("mcs_t2")
    doc["lockbench"] = 2
    assert _error(json.dumps(doc)).endswith("format version 2 is not supported; known: 1")


def test_inconsistent_outputs() -> None:
    doc = _doc("ttas_t3")
    bad = dict(doc, per_thread_ops=doc["per_thread_ops"][:2])
    assert "2 entries for 3 threads" in _error(json.dumps(bad))
    bad = dict(doc, per_thread_ops=[v + 1 for v in doc["per_thread_ops"]])
    assert "per_thread_ops sum to" in _error(json.dumps(bad))
    bad = dict(doc, per_thread_ops=[-1] + doc["per_thread_ops"][1:])
    assert "not a list of non-negative integers" in _error(json.dumps(bad))
    bad = dict(doc, throughput_ops_s=doc["throughput_ops_s"] * 2)
    assert "!= total_ops/duration_s" in _error(json.dumps(bad))
    bad = dict(doc, jain_fairness=doc["jain_fairness"] / 2)
    assert "jain_fairness" in _error(json.dumps(bad))
    bad = dict(doc, duration_s=0)
    assert "duration_s: 0 is not positive" in _error(json.dumps(bad))


def test_to_metrics_checks_jain_too() -> None:
    doc = dict(_doc("ttas_t3"), jain_fairness=0.1)
    with pytest.raises(TrialError, match="jain_fairness 0.1 does not match"):
        to_metrics(doc)


def test_jain() -> None:
    assert jain([5, 5, 5, 5]) == 1.0
    assert jain([7]) == 1.0
    assert jain([10, 0, 0, 0]) == 0.25
    assert jain([1, 2, 3]) == pytest.approx(36 / 42)
    assert jain([0, 0]) == 1.0
    with pytest.raises(ValueError, match="no values"):
        jain([])
    with pytest.raises(ValueError, match="negative"):
        jain([1, -1])
