"""The matrix schema for editors (issue 23): workload names and each workload's parameters in
runner/matrix/schema.json (if/then per workload), so check-jsonschema and YAML language servers refuse
`lock: tiket`; the examples point editors at it; the runtime validator keeps accepting every example."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.matrix import editor_schema
from runner.matrix.load import load_matrix, parse_matrix

PROJECT = Path(__file__).resolve().parents[1]
SCHEMA = PROJECT / "runner" / "matrix" / "schema.json"
EXAMPLES = [PROJECT / "matrix.yml", *sorted((PROJECT / "examples").glob("*.yml"))]
CHECK = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema as an editor's CI would run it: the schema file, no network."""
    assert CHECK is not None, "check-jsonschema is in the test extra (pyproject.toml)"
    return subprocess.run([CHECK, "--schemafile", str(SCHEMA), *map(str, files)], capture_output=True, text=True, timeout=120)


def test_the_schema_blocks_are_generated_from_the_workloads() -> None:
    current = json.loads(SCHEMA.read_text())["allOf"]
    assert current == editor_schema.editor_rules(), "run `python -m runner.matrix.editor_schema` to regenerate schema.json's allOf"
    assert editor_schema.with_rules(SCHEMA.read_text(), current) == SCHEMA.read_text()  # one block per workload, idempotent


def test_one_block_per_workload() -> None:
    rules = json.loads(SCHEMA.read_text())["allOf"]
    names = rules[0]["properties"]["workload"]["properties"]["name"]["enum"]
    assert {"command", "gmake", "lockbench"} <= set(names)
    assert [r["if"]["properties"]["workload"]["properties"]["name"]["const"] for r in rules[1:]] == names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_carries_the_modeline_and_validates(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (path.parent / first.split("$schema=", 1)[1]).resolve() == SCHEMA
    load_matrix(path)  # the runtime validator accepts it


def test_check_jsonschema_accepts_every_example() -> None:
    done = check_jsonschema(*EXAMPLES)
    assert done.returncode == 0, done.stdout + done.stderr


LOCKBENCH = "campaign: c\nworkload:\n  name: lockbench\n"
BAD = [  # (id, matrix text, what check-jsonschema says)
    ("lock_axis", LOCKBENCH + "axes:\n  lock: [tiket, mcs]\n", "$.axes.lock[0]: 'tiket' is not one of"),
    ("lock_param", LOCKBENCH + "  params: {lock: tiket}\n", "$.workload.params.lock: 'tiket' is not one of"),
    ("workload", "campaign: c\nworkload:\n  name: lockbnch\n", "$.workload.name: 'lockbnch' is not one of"),
    ("param_name", LOCKBENCH + "  params: {treads: 2}\n", "Additional properties are not allowed ('treads' was unexpected)"),
    ("axis_name", LOCKBENCH + "axes:\n  treads: [1, 2]\n", "'treads' is not one of"),
    ("threads_text", LOCKBENCH + "axes:\n  threads: [1, many]\n", "$.axes.threads[1]"),
    ("env", LOCKBENCH + "axes:\n  env: [host, vm]\n", "$.axes.env[1]: 'vm' is not one of"),
    ("command_metrics", "campaign: c\nworkload:\n  name: command\n  params: {run: 'true', metrics: jsn}\n", "$.workload.params.metrics"),
]


@pytest.mark.parametrize(("text", "expect"), [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_check_jsonschema_refuses_typos(text: str, expect: str, tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text(text)
    done = check_jsonschema(path)
    assert done.returncode == 1 and expect in done.stdout, done.stdout + done.stderr
    with pytest.raises(Exception):  # noqa: B017, PT011 - the runtime refuses it too (MatrixError or UnknownNameError)
        parse_matrix(text, path)


GOOD = [
    ("relative_threads", LOCKBENCH + "axes:\n  threads: [1, \"50%\", \"200 %\"]\n  lock: [ticket]\n"),
    ("runner_params", LOCKBENCH + "axes:\n  env: [host, container]\n  vcpus: [1, \"100%\"]\n"),
    ("command_any_param", "campaign: c\nworkload:\n  name: command\n  params: {run: 'true', size: 3}\naxes:\n  seconds: [0.1]\n"),
    ("gmake", "campaign: c\nworkload:\n  name: gmake\naxes:\n  cores: [\"100%\", 2]\n  jobs: [4]\n"),
]


@pytest.mark.parametrize("text", [pytest.param(g[1], id=g[0]) for g in GOOD])
def test_both_validators_accept_good_matrices(text: str, tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text(text)
    done = check_jsonschema(path)
    assert done.returncode == 0, done.stdout + done.stderr
    parse_matrix(text, path)


def test_cpu_counts_are_integers_or_percentages() -> None:
    assert editor_schema.editor_value({"x-cpus": True, "type": "integer", "minimum": 1, "description": "d"}) == {
        "description": "d", "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": editor_schema.PERCENT_PATTERN}]}
    assert editor_schema.editor_value({"enum": ["a"]}) == {"enum": ["a"]}
