"""The command workload's output parser, on output captured from real commands."""

from pathlib import Path

import pytest

from runner.errors import TrialError
from runner.workloads.command import parse_output

DATA = Path(__file__).parent / "data" / "command"


def test_json_output() -> None:
    metrics = parse_output((DATA / "json_output.txt").read_text(), "json")
    assert {m.name: m.value for m in metrics} == {"slept": 0.1, "rss_kb": 1536.0}


def test_regex_output_of_time() -> None:
    spec = {
        "elapsed": {"regex": r"^real\s+(?P<value>[0-9.]+)", "unit": "s", "higher_is_better": False},
        "user": {"regex": r"^user\s+(?P<value>[0-9.]+)", "unit": "s"},
    }
    metrics = {m.name: m for m in parse_output((DATA / "time_p.txt").read_text(), spec)}
    assert metrics["elapsed"].value == pytest.approx(0.215)
    assert metrics["elapsed"].unit == "s" and metrics["elapsed"].higher_is_better is False


def test_errors_are_one_line() -> None:
    with pytest.raises(TrialError, match="no JSON object found"):
        parse_output("hello\n", "json")
    with pytest.raises(TrialError, match="did not match"):
        parse_output("hello\n", {"x": {"regex": "(?P<value>[0-9]+)"}})
