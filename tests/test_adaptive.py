"""Repetitions until the interval is tight: the pure decision (runner.analysis.adaptive), the rounds a
campaign adds (runner.execution.rounds) and the matrix key."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest

from runner.analysis.adaptive import (
    AT_MAX,
    OPEN,
    TIGHT,
    CellState,
    ci_rel,
    deciding_metric,
    next_round,
    repetition_table,
    status,
    step,
)
from runner.analysis.stats import cell_stats
from runner.errors import MatrixError
from runner.execution.rounds import Rounds
from runner.matrix.load import AdaptiveRepetitions, parse_matrix
from runner.records.store import AttemptRecord, Recorded
from runner.trials import plan, trial_id
from runner.records.metric import Metric

TIGHT_VALUES = (100.0, 101.0, 99.0)
WILD_VALUES = (100.0, 300.0, 20.0)


def test_ci_rel_is_the_reports_interval() -> None:
    values = [10.0, 12.0, 9.0, 15.0, 11.0]
    m = pd.DataFrame({"cell_id": "c", "repetition": range(5), "metric": "v", "value": values})
    assert ci_rel(values) == pytest.approx(float(cell_stats(m)["ci_rel"].iloc[0]))
    assert math.isnan(ci_rel([1.0]))
    assert ci_rel([0.0, 0.0, 0.0]) == 0.0 and ci_rel([0.0, 0.0, 1.0, -1.0]) == math.inf


def test_status_and_step() -> None:
    assert status(CellState(TIGHT_VALUES, 3), 0.05, 30) == TIGHT
    assert status(CellState(WILD_VALUES, 3), 0.05, 30) == OPEN
    assert status(CellState(WILD_VALUES, 30), 0.05, 30) == AT_MAX
    assert step(CellState(TIGHT_VALUES, 3), 0.05, 30) == 0
    assert step(CellState(WILD_VALUES, 3), 0.05, 30) == 3  # needs far more: at most doubles per round
    assert step(CellState(WILD_VALUES, 28), 0.05, 30) == 2  # never past max
    assert step(CellState((), 3), 0.05, 30) == 0  # every repetition failed: no more
    assert step(CellState((100.0,), 3), 0.05, 30) == 1  # one value (two failed): one more at a time


def test_step_near_the_target_is_small() -> None:
    values = (100.0, 104.0, 96.0, 103.0, 97.0, 101.0)
    rel = ci_rel(values)
    assert 0.02 < rel < 0.05
    target = rel * 0.95  # just too wide: needs about 10% more repetitions
    assert step(CellState(values, 6), target, 30) == 1


def test_next_round_only_names_cells_that_need_more() -> None:
    cells = {"a": CellState(TIGHT_VALUES, 3), "b": CellState(WILD_VALUES, 3), "c": CellState(WILD_VALUES, 30)}
    assert next_round(cells, 0.05, 30) == {"b": 3}
    assert next_round({"a": cells["a"]}, 0.05, 30) == {}


def test_deciding_metric() -> None:
    assert deciding_metric([("total_ops", True), ("throughput", True)]) == "throughput"
    assert deciding_metric([("z", True), ("a", None), ("b", True)]) == "b"
    assert deciding_metric([("z", None), ("a", None)]) == "a"
    assert deciding_metric([("throughput", True)], "total_ops") == "total_ops"
    assert deciding_metric([]) is None


def test_repetition_table() -> None:
    metrics = pd.DataFrame({"cell_id": ["a"] * 3 + ["b"] * 4, "metric": "v", "value": [*TIGHT_VALUES, *WILD_VALUES, 50.0],
                            "higher_is_better": None, "thread": None, "vm": None, "probe": None})
    trials = pd.DataFrame({"cell_id": ["a"] * 3 + ["b"] * 4, "repetition": [1, 2, 3, 1, 2, 3, 4]})
    table = repetition_table(metrics, trials, {"min": 3, "max": 4, "ci": 0.05, "metric": None}).set_index("cell_id")
    assert table.loc["a", "status"] == TIGHT and table.loc["b", "status"] == AT_MAX
    assert table.loc["b", "repetitions"] == 4 and table.loc["b", "metric"] == "v"


# ----- matrix ---------------------------------------------------------------------------------------------------
BASE = "campaign: x\nworkload: {name: command, params: {run: 'echo {\"v\": 1}'}}\naxes: {k: [1, 2, 3]}\n"


def test_matrix_repetitions_as_bounds() -> None:
    m = parse_matrix(BASE + "repetitions: {min: 3, max: 30, ci: 0.05}\n")
    assert m.adaptive == AdaptiveRepetitions(3, 30, 0.05, None) and m.repetitions == 3
    assert parse_matrix(BASE + "repetitions: {min: 2, max: 2}\n").adaptive == AdaptiveRepetitions(2, 2, 0.05, None)
    plain = parse_matrix(BASE + "repetitions: 5\n")
    assert plain.adaptive is None and plain.repetitions == 5


@pytest.mark.parametrize(("text", "message"), [
    ("{min: 5, max: 3}", "m.yml: repetitions: min 5 > max 3; min must be at most max"),
    ("{min: 3, max: 5, ci: 0}", "m.yml: repetitions.ci: 0 is outside (0, 1); give the relative half-width of the interval, e.g. 0.05 for +-5%"),
    ("{min: 3, max: 5, ci: 1.5}", "m.yml: repetitions.ci: 1.5 is outside (0, 1); give the relative half-width of the interval, e.g. 0.05 for +-5%"),
    ("{min: 3, max: 5, cl: 0.1}", "m.yml: repetitions: unknown key 'cl'; allowed: ci, max, metric, min"),
])
def test_matrix_bad_bounds_are_one_line(text: str, message: str) -> None:
    with pytest.raises(MatrixError) as err:
        parse_matrix(BASE + f"repetitions: {text}\n", Path("m.yml"))
    assert str(err.value) == message and err.value.exit_code == 2


def test_cli_bad_bounds_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runner.cli import main

    path = tmp_path / "m.yml"
    path.write_text(BASE + "repetitions: {min: 9, max: 3}\n")
    assert main(["plan", str(path)]) == 2
    assert capsys.readouterr().err.strip().endswith("repetitions: min 9 > max 3; min must be at most max")


def test_plan_shows_the_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runner.cli import main

    path = tmp_path / "m.yml"
    path.write_text(BASE + "repetitions: {min: 3, max: 20, ci: 0.05}\n")
    assert main(["plan", str(path), "--show", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3 to 20 per cell" in out and "9 to 60 trials" in out and "+-5%" in out


# ----- rounds ---------------------------------------------------------------------------------------------------
def _ok(t, value: float) -> AttemptRecord:  # noqa: ANN001 - a Trial
    return AttemptRecord(trial_id=t.trial_id, cell_id=t.cell_id, repetition=t.repetition, attempt=1, host="h", status="ok",
                         error=None, started_at=0.0, ended_at=0.0, wall_s=0.0, workload_wall_s=0.0, params=t.param_dict,
                         metrics=(Metric("v", value, "", None), Metric("perf_stat.x", 1e9, "", None, probe="perf_stat", side="host")))


def test_rounds_add_interleaved_trials_with_the_ids_of_their_repetitions() -> None:
    matrix = parse_matrix(BASE + "repetitions: {min: 3, max: 8, ci: 0.05}\n")
    trials = plan(matrix, {"h": 2})
    rounds = Rounds(matrix, trials)
    by_cell: dict[str, list] = {}
    for t in trials:
        by_cell.setdefault(t.cell_id, []).append(t)
    cells = list(by_cell)
    for cell, values in zip(cells, (TIGHT_VALUES, WILD_VALUES, WILD_VALUES), strict=True):
        for t, v in zip(by_cell[cell], values, strict=True):
            rounds.observe(_ok(t, v))
    more = rounds.next_round()
    assert rounds.round == 2
    assert [(t.cell_id, t.repetition) for t in more] == [(cells[1], 4), (cells[2], 4), (cells[1], 5), (cells[2], 5), (cells[1], 6), (cells[2], 6)]
    assert all(t.trial_id == trial_id(t.cell_id, t.repetition) for t in more)
    assert "round 2: 2 cell(s) wider than +-5% on v: 6 more trial(s)" in rounds.describe(more)
    for t in more:
        rounds.observe(_ok(t, 10.0 * t.repetition))
    last = rounds.next_round()
    assert sorted(t.repetition for t in last) == [7, 7, 8, 8]  # doubling would be 12: max is 8
    assert rounds.next_round() == [] and "1 cell(s) met +-5% on v, 2 stopped at max 8" in rounds.summary()


def _noisy(cell_index: int, rep: int) -> float:
    """k=1 steady, k=2 a little noisy (small steps), k=3 wild (doubling steps): values by repetition number."""
    return 1000.0 + [0, 8, 37][cell_index] * ((rep * 7919) % 23)


def test_a_relaunch_continues_the_round_count() -> None:
    matrix = parse_matrix(BASE + "repetitions: {min: 3, max: 30, ci: 0.05}\n")
    trials = plan(matrix, {"h": 2})
    index = {c: i for i, c in enumerate(dict.fromkeys(t.cell_id for t in trials))}
    rounds = Rounds(matrix, trials)
    ran, history = list(trials), [(1, 0)]  # (round, trials run before it started)
    for t in trials:
        rounds.observe(_ok(t, _noisy(index[t.cell_id], t.repetition)))
    while more := rounds.next_round():
        history.append((rounds.round, len(ran)))
        for t in more:
            rounds.observe(_ok(t, _noisy(index[t.cell_id], t.repetition)))
        ran += more
    sizes = [b - a for (_, a), (_, b) in itertools.pairwise([*history[1:], (0, len(ran))])]
    assert len(history) >= 4 and len(set(sizes)) >= 3, sizes  # several rounds, of different sizes

    def relaunch(n: int) -> Rounds:
        """A new launch that finds the first n trials recorded (a launch that died after them)."""
        done = ran[:n]
        again = Rounds(matrix, trials)
        again.resumed({t.trial_id: Recorded(1, True) for t in done})
        again.load(pd.DataFrame({"cell_id": [t.cell_id for t in done], "repetition": [t.repetition for t in done], "metric": "v",
                                 "higher_is_better": None, "value": [_noisy(index[t.cell_id], t.repetition) for t in done],
                                 "thread": None, "vm": None, "probe": None}))
        return again

    for (number, start), (_, end) in zip(history, [*history[1:], (0, len(ran))], strict=True):
        assert relaunch(end).round == number  # between two rounds: the last one run
        assert relaunch(start + 1).round == number  # within a round: that round
    # resumed between rounds 2 and 3: the next round is announced as round 3, not 2
    again = relaunch(history[2][1])
    assert again.round == 2 and again.next_round() and again.round == 3
    assert rounds.summary().startswith(f"repetitions after {history[-1][0]} round(s)")
    assert relaunch(len(ran)).summary() == rounds.summary()


def test_rounds_resume_from_the_dataset() -> None:
    matrix = parse_matrix(BASE + "repetitions: {min: 3, max: 8, ci: 0.05}\n")
    trials = plan(matrix, {"h": 2})
    cell = trials[0].cell_id
    recorded = {t.trial_id: Recorded(1, True) for t in trials}
    recorded[trial_id(cell, 4)] = Recorded(1, True)
    recorded[trial_id(cell, 5)] = Recorded(2, False)  # failed in the earlier launch: run again
    rounds = Rounds(matrix, trials)
    resumed = rounds.resumed(recorded)
    assert [(t.cell_id, t.repetition) for t in resumed] == [(cell, 4), (cell, 5)]
    metrics = pd.DataFrame({"cell_id": [t.cell_id for t in trials] + [cell], "metric": "v", "higher_is_better": None,
                            "value": [100.0] * len(trials) + [100.0], "thread": None, "vm": None, "probe": None})
    rounds.load(metrics)
    assert rounds.tried[cell] == 5 and rounds.values[cell]["v"] == [100.0] * 4
    assert rounds.next_round() == []  # every cell is tight
