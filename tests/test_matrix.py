"""Matrix validation: every bad file in tests/data/matrices/bad gives its one-line message."""

from pathlib import Path

import pytest

from runner.errors import MatrixError, UnknownNameError, UsageError
from runner.matrix.load import load_matrix, parse_matrix

BAD = sorted((Path(__file__).parent / "data" / "matrices" / "bad").glob("*.yml"))
PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_matrix_message(path: Path) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(UsageError) as info:
        load_matrix(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)) or isinstance(info.value, UnknownNameError)
    assert expect.split(": ", 1)[1] in message, message


def test_bad_corpus_is_not_empty() -> None:
    assert len(BAD) >= 20


def test_missing_file() -> None:
    with pytest.raises(UsageError, match="no-such.yml: no such matrix file"):
        load_matrix("no-such.yml")


def test_example_matrix_is_valid() -> None:
    m = load_matrix(PROJECT / "matrix.yml")
    assert m.workload == "lockbench"
    assert m.axes["lock"] == ("ttas", "ticket", "mcs", "mutex", "oticket", "spinpark")
    assert m.axes["threads"][-1] == "200%"
    assert m.order == "interleave"


def test_yaml_12_booleans() -> None:
    # `on:` must stay a key, not turn into True (YAML 1.1); 'no' stays a string value.
    m = parse_matrix("campaign: c\nworkload: {name: command, params: {run: 'true', flag: no}}\nretry: {on: [timeout]}\n")
    assert m.retry.on == frozenset({"timeout"})
    assert m.params["flag"] == "no"


def test_defaults() -> None:
    m = parse_matrix("campaign: c\nworkload: {name: lockbench}\n")
    assert (m.repetitions, m.timeout, m.order, m.hosts, m.placement) == (3, 600.0, "interleave", "local", "pool")
    assert m.retry.attempts == 2 and m.retry.on == {"failed", "timeout", "host"}
    # The default seed is derived from the campaign name: stable, recorded, different per campaign.
    assert m.seed == parse_matrix("campaign: c\nworkload: {name: lockbench}\n").seed
    assert m.seed != parse_matrix("campaign: d\nworkload: {name: lockbench}\n").seed


def test_percentages_only_for_cpu_counts() -> None:
    parse_matrix("campaign: c\nworkload: {name: lockbench}\naxes: {threads: ['50%', '200%']}\n")
    with pytest.raises(MatrixError, match=r"axes.duration\[0\]: '50%' is not a number"):
        parse_matrix("campaign: c\nworkload: {name: lockbench}\naxes: {duration: ['50%']}\n")


def test_command_workload_takes_any_parameter() -> None:
    m = parse_matrix("campaign: c\nworkload: {name: command, params: {run: 'echo'}}\naxes: {size: [1, 2], mode: [a, b]}\n")
    assert set(m.axes) == {"size", "mode"}
