"""Parse the JSON object that lockbench.c prints, and turn it into metrics. Pure functions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from runner.errors import TrialError
from runner.fairness import jain  # re-exported: runner.execution.guests imports it from here
from runner.records.metric import Metric

# Output format versions this parser reads (the "lockbench" key; history in lockbench.c's header).
FORMAT_VERSIONS = frozenset({1})

# Required keys and the JSON types they must have (bool is excluded from numbers explicitly).
_REQUIRED: dict[str, tuple[type, ...]] = {
    "lockbench": (int,),
    "lock": (str,),
    "threads": (int,),
    "duration_s": (int, float),
    "cs_work": (int,),
    "out_work": (int,),
    "spin_threshold": (int,),
    "pin": (str,),
    "online_cpus": (int,),
    "total_ops": (int,),
    "throughput_ops_s": (int, float),
    "per_thread_ops": (list,),
    "jain_fairness": (int, float),
    "counter_ok": (bool,),
    "mean_ops_per_thread": (int, float),
    "version": (str,),
}

# The binary prints jain_fairness with 6 decimals, duration_s with 9 and throughput with 3.
_JAIN_TOLERANCE = 1e-5
_THROUGHPUT_REL_TOLERANCE = 1e-5


def _fail(msg: str) -> TrialError:
    return TrialError(f"lockbench output: {msg}")


def parse_output(stdout: str) -> dict[str, Any]:
    """Validate lockbench's stdout (exactly one JSON object) and return it as a dict.

    Raises TrialError with a one-line message when the output is empty, not one JSON object, of an
    unknown format version, missing or mistyping a key, inconsistent, or reports counter_ok false.
    """
    text = stdout.strip()
    if not text:
        raise _fail("empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(f"not one JSON object ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(doc, dict):
        raise _fail(f"expected a JSON object, got {type(doc).__name__}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise _fail(f"missing keys: {', '.join(missing)}")
    for key, types in _REQUIRED.items():
        value = doc[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _fail(f"{key}: {value!r} is not of type {'/'.join(t.__name__ for t in types)}")
    if doc["lockbench"] not in FORMAT_VERSIONS:
        known = ", ".join(map(str, sorted(FORMAT_VERSIONS)))
        raise _fail(f"format version {doc['lockbench']} is not supported; known: {known}")
    if not doc["counter_ok"]:
        seen = f" (counter {doc['counter']}, total_ops {doc['total_ops']})" if "counter" in doc else ""
        raise _fail(f"counter_ok is false{seen}: lock {doc['lock']!r} broke mutual exclusion")
    if doc["threads"] < 1:
        raise _fail(f"threads: {doc['threads']} is not positive")
    per_thread = doc["per_thread_ops"]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in per_thread):
        raise _fail("per_thread_ops: not a list of non-negative integers")
    if len(per_thread) != doc["threads"]:
        raise _fail(f"per_thread_ops has {len(per_thread)} entries for {doc['threads']} threads")
    if sum(per_thread) != doc["total_ops"]:
        raise _fail(f"per_thread_ops sum to {sum(per_thread)}, total_ops is {doc['total_ops']}")
    if not doc["duration_s"] > 0:
        raise _fail(f"duration_s: {doc['duration_s']!r} is not positive")
    expected = doc["total_ops"] / doc["duration_s"]
    if not math.isclose(doc["throughput_ops_s"], expected, rel_tol=_THROUGHPUT_REL_TOLERANCE, abs_tol=1e-3):
        raise _fail(f"throughput_ops_s {doc['throughput_ops_s']} != total_ops/duration_s {expected:.3f}")
    _checked_jain(doc)
    return doc


def _checked_jain(doc: Mapping[str, Any]) -> float:
    """Jain's index recomputed from per_thread_ops; TrialError if the reported one disagrees."""
    fairness = jain(doc["per_thread_ops"])
    if abs(fairness - doc["jain_fairness"]) > _JAIN_TOLERANCE:
        raise _fail(f"jain_fairness {doc['jain_fairness']} does not match per_thread_ops ({fairness:.6f})")
    return fairness


def to_metrics(doc: Mapping[str, Any]) -> list[Metric]:
    """Metrics of one validated lockbench run (see parse_output): totals, then one thread_ops per thread."""
    metrics = [
        Metric("throughput", float(doc["throughput_ops_s"]), "ops/s", True),
        Metric("total_ops", float(doc["total_ops"]), "ops", True),
        Metric("jain_fairness", _checked_jain(doc), "index", True),
        Metric("duration_s", float(doc["duration_s"]), "s", None),
    ]
    if isinstance(doc.get("stopped_early"), bool):  # format 1, added in lockbench 1.1, exact since 1.2
        metrics.append(Metric("stopped_early", float(doc["stopped_early"]), "bool", None))
    metrics += [Metric("thread_ops", float(ops), "ops", True, thread=i) for i, ops in enumerate(doc["per_thread_ops"])]
    return metrics
