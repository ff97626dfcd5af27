"""The `command` workload as docs/workloads.md shows it (issue 23): every matrix example there is a valid
matrix, its commands run here print what the parser reads, and JSON metrics may declare unit and direction."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from runner.errors import TrialError
from runner.matrix.load import parse_matrix
from runner.workloads.command import parse_output

PROJECT = Path(__file__).resolve().parents[1]
DOC = PROJECT / "docs" / "workloads.md"


def command_section() -> str:
    text = DOC.read_text()
    start = text.index("\n## command\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def examples(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", command_section(), re.S)


def test_the_section_has_matrix_examples() -> None:
    assert len(examples("yaml")) >= 4 and len(examples("json")) == 1


@pytest.mark.parametrize("index", range(4))
def test_every_matrix_example_is_a_valid_matrix(index: int, tmp_path: Path) -> None:
    text = examples("yaml")[index]
    assert text.startswith("# yaml-language-server: $schema=../runner/matrix/schema.json\n")
    matrix = parse_matrix(text, tmp_path / "example.yml")
    assert matrix.workload == "command"


def run_example(text: str, params: dict[str, object]) -> str:
    """The example's command as the workload runs it: /bin/sh -c with RUNNER_<NAME> variables."""
    doc = yaml.safe_load(text)
    fixed = {k: v for k, v in doc["workload"]["params"].items() if k not in ("run", "metrics", "estimate")}
    env = {**os.environ, **{f"RUNNER_{k.upper()}": str(v) for k, v in {**fixed, **params}.items()}}
    done = subprocess.run(["/bin/sh", "-c", doc["workload"]["params"]["run"]], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout


def test_the_python_example_declares_unit_and_direction() -> None:
    text = next(t for t in examples("yaml") if "sort-scaling" in t)
    metrics = {m.name: m for m in parse_output(run_example(text, {"threads": 1}), "json")}
    assert metrics["elapsed"].unit == "s" and metrics["elapsed"].higher_is_better is False and metrics["elapsed"].value > 0
    assert metrics["rate"].unit == "items/s" and metrics["rate"].higher_is_better is True


def test_the_regex_example_matches_real_output() -> None:
    text = next(t for t in examples("yaml") if "time-true" in t)
    spec = yaml.safe_load(text)["workload"]["params"]["metrics"]
    (m,) = parse_output(run_example(text, {"loops": 10}), spec)
    assert m.name == "user_s" and m.unit == "s" and m.higher_is_better is False and m.value >= 0


def test_the_json_line_of_the_docs() -> None:
    metrics = {m.name: m for m in parse_output(examples("json")[0], "json")}
    assert (metrics["elapsed"].value, metrics["elapsed"].unit, metrics["elapsed"].higher_is_better) == (1.52, "s", False)
    assert (metrics["ops"].unit, metrics["ops"].higher_is_better) == ("ops/s", True)
    assert (metrics["rss_kb"].value, metrics["rss_kb"].unit, metrics["rss_kb"].higher_is_better) == (1536.0, "", None)


@pytest.mark.parametrize(("line", "message"), [
    ('{"t": {"value": 1, "units": "s"}}', "metric 't': unknown key 'units'; allowed: value, unit, higher_is_better"),
    ('{"t": {"value": "fast"}}', "metric 't': value 'fast' is not a number"),
    ('{"t": {"value": true}}', "metric 't': value True is not a number"),
    ('{"t": {"value": 1, "unit": 5}}', "metric 't': unit 5 is not a string"),
    ('{"t": {"value": 1, "higher_is_better": "yes"}}', "metric 't': higher_is_better 'yes' is not true, false or null"),
])
def test_a_malformed_metric_object_fails_the_trial_naming_it(line: str, message: str) -> None:
    with pytest.raises(TrialError, match=re.escape(message)):
        parse_output(line, "json")


def test_other_values_are_not_metrics() -> None:
    metrics = parse_output('{"host": "a", "list": [1], "meta": {"x": 1}, "n": 2, "ok": true}', "json")
    assert [(m.name, m.value) for m in metrics] == [("n", 2.0)]
