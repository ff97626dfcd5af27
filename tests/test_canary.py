"""The canary (matrix key `canary`): validation, placement in the trial list, deterministic ids, the
controller's decision host by host and its resume, the host_state probe's parser, and the `role` column that
keeps canary runs out of the cells' statistics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.analysis.stats import cell_stats
from runner.errors import MatrixError
from runner.execution.canary import HOST_STATE, Canaries, probes_for, since_last_canary
from runner.execution.rounds import Rounds
from runner.matrix.load import parse_matrix
from runner.probes import base as probes
from runner.probes.host_state import SAMPLE_S, parse_state
from runner.records.schema import SCHEMA_VERSION, TRIAL_ROLE
from runner.records.store import AttemptRecord, CampaignStore
from runner.trials import CANARY, canary_cells, canary_due, canary_id, canary_trial, place_canaries, plan, trial_id
from runner.records.metric import Metric

DATA = Path(__file__).parent / "data" / "probes"
BASE = ("campaign: c\nworkload: {name: lockbench}\naxes: {lock: [ttas, ticket], threads: [1, 2, '100%']}\n"
        "repetitions: 2\norder: as-written\n")


def matrix(extra: str = "canary: {cell: {lock: ticket, threads: 2}, every: 3}\n", base: str = BASE):
    return parse_matrix(base + extra, Path("m.yml"))


# -- the matrix key ---------------------------------------------------------------------------------------------

def test_canary_names_one_cell_as_written() -> None:
    m = matrix()
    assert m.canary is not None and (dict(m.canary.cell), m.canary.every, m.canary.metric) == ({"lock": "ticket", "threads": 2}, 3, None)
    # an axis with one value may be left out; values are matched as written ("100%" is not 2)
    m = parse_matrix("campaign: c\nworkload: {name: lockbench}\naxes: {lock: [ttas], threads: [1, '100%']}\n"
                     "canary: {cell: {threads: '100%'}, every: 1, metric: total_ops}\n")
    assert dict(m.canary.cell) == {"lock": "ttas", "threads": "100%"} and m.canary.metric == "total_ops"
    assert parse_matrix(BASE).canary is None
    # every N trials, every M minutes, or both (whichever comes first)
    assert (m.canary.every, m.canary.minutes) == (1, None)
    m = matrix("canary: {cell: {lock: ticket, threads: 2}, minutes: 30}\n")
    assert (m.canary.every, m.canary.minutes) == (None, 30.0)
    m = matrix("canary: {cell: {lock: ticket, threads: 2}, every: 10, minutes: 2.5}\n")
    assert (m.canary.every, m.canary.minutes) == (10, 2.5)


@pytest.mark.parametrize(("extra", "message"), [
    ("canary: {cell: {lock: mcs, threads: 2}, every: 3}\n", "m.yml: canary.cell.lock: 'mcs' is not a value of axis 'lock'; its values: 'ttas', 'ticket'"),
    ("canary: {cell: {lock: ticket, threads: 2.5}, every: 3}\n", "m.yml: canary.cell.threads: 2.5 is not a value of axis 'threads'"),
    ("canary: {cell: {lock: ticket, cores: 2}, every: 3}\n", "m.yml: canary.cell.cores: not an axis; axes: lock, threads"),
    ("canary: {cell: {threads: 2}, every: 3}\n", "m.yml: canary.cell: {threads: 2} names 2 cells of the matrix; give a value of every axis that varies (also lock)"),
    ("canary: {cell: {lock: ticket, threads: 2}, every: 3}\nexclude: [{lock: ticket, threads: 2}]\n",
     "m.yml: canary.cell: {lock: \"ticket\", threads: 2} names no cell of the matrix"),
    ("canary: {cell: {lock: ticket, threads: 2}, every: 0}\n", "m.yml: canary.every: 0 is less than the minimum of 1"),
    ("canary: {cell: {lock: ticket, threads: 2}, every: 1.5}\n", "m.yml: canary.every: 1.5 is not an integer"),
    ("canary: {cell: {lock: ticket, threads: 2}, every: true}\n", "m.yml: canary.every: True is not an integer"),
    ("canary: {cell: {lock: ticket, threads: 2}}\n", "m.yml: canary: neither 'every' nor 'minutes' is given; give trials between "
     "two canary runs (every: 10), minutes (minutes: 30) or both (a canary run is due when either is reached)"),
    ("canary: {every: 3}\n", "m.yml: canary: 'cell' is required but missing"),
    ("canary: {cell: {lock: ticket, threads: 2}, minutes: 0}\n", "m.yml: canary.minutes: 0 is less than or equal to the minimum of 0"),
    ("canary: {cell: {lock: ticket, threads: 2}, minutes: -5}\n", "m.yml: canary.minutes: -5 is less than or equal to the minimum of 0"),
    ("canary: {cell: {lock: ticket, threads: 2}, minutes: half}\n", "m.yml: canary.minutes: 'half' is not a number"),
    ("canary: {cell: {lock: ticket, threads: 2}, minutes: true}\n", "m.yml: canary.minutes: True is not a number"),
    ("canary: {cell: {lock: ticket, threads: 2}, every: 3, each: 3}\n", "m.yml: canary: unknown key 'each'; allowed: cell, every, metric, minutes"),
    ("canary: 10\n", "m.yml: canary: 10 is not an object"),
])
def test_bad_canary_is_one_line(extra: str, message: str) -> None:
    with pytest.raises(MatrixError) as err:
        matrix(extra)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_plan_refuses_a_canary_outside_the_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runner.cli import main

    path = tmp_path / "m.yml"
    path.write_text(BASE + "canary: {cell: {lock: ticket, threads: 3}, every: 2}\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "canary.cell.threads: 3 is not a value of axis 'threads'" in err[0]


# -- placement and ids ------------------------------------------------------------------------------------------

def test_canary_runs_before_the_first_and_after_every_n_trials() -> None:
    m = matrix()
    trials = plan(m, {"h": 4})
    template = canary_cells(m, {"h": 4})[None]
    placed = place_canaries(trials, template, "h", 3)
    roles = ["C" if t.role == CANARY else "t" for t in placed]
    assert "".join(roles) == "CtttCtttCtttCttt"  # 12 trials, every 3: 4 canary runs
    canaries = [t for t in placed if t.role == CANARY]
    assert [t.repetition for t in canaries] == [1, 2, 3, 4]
    assert {t.cell_id for t in canaries} == {next(t.cell_id for t in trials if dict(t.written) == {"lock": "ticket", "threads": 2})}
    assert all(t.host == "h" for t in canaries)
    assert [t for t in placed if t.role is None] == trials  # the matrix's own trials keep their order
    # resumed in the middle: 2 trials since the last canary run (run 4), the next one after 1 more trial
    again = place_canaries(trials[:4], template, "h", 3, first_run=5, since=2)
    assert ["C" if t.role else "t" for t in again] == list("tCttt") and again[1].repetition == 5


def test_canary_runs_every_m_minutes_on_the_plan_clock_and_after_the_last_trial() -> None:
    m = matrix("canary: {cell: {lock: ticket, threads: 2}, minutes: 3}\n")
    trials = plan(m, {"h": 4})
    template = canary_cells(m, {"h": 4})[None]
    placed = place_canaries(trials, template, "h", None, minutes=3, estimate=lambda t: 60.0, closing=True)
    # the canary run's own minute counts: after it, two 1-minute trials reach 3 minutes
    assert "".join("C" if t.role == CANARY else "t" for t in placed) == "CttCttCttCttCttCttC"
    assert [t.repetition for t in placed if t.role == CANARY] == [1, 2, 3, 4, 5, 6, 7]
    # both limits: whichever comes first; without an estimate the minutes are not counted (plan of every N)
    both = place_canaries(trials, template, "h", 2, minutes=100, estimate=lambda t: 60.0)
    assert "".join("C" if t.role else "t" for t in both) == "CttCttCttCttCttCtt"
    assert place_canaries(trials, template, "h", None, minutes=3) == [placed[0], *trials]
    assert place_canaries([], template, "h", 3, closing=True) == []  # no trial: no canary run at all


def test_plan_shows_the_canary_rule() -> None:
    from runner.cli.plan import canary_line, canary_runs, with_canaries

    assert [canary_runs(n, 3) for n in (0, 1, 3, 4, 12)] == [0, 2, 2, 3, 5] and canary_runs(7, None) == 2
    m = matrix()
    trials = plan(m, {"h": 4})
    line = canary_line(m, trials, ["h"], 4)
    assert line.startswith("canary lock=ticket threads=2: before the first trial, after every 3 trials and after the last "
                           "trial on each host: 5 more trials (")
    assert [t.repetition for t in with_canaries(m, trials, ["h"], 4) if t.role == CANARY] == [1, 2, 3, 4, 5]
    m = matrix("canary: {cell: {lock: ticket, threads: 2}, every: 4, minutes: 3}\n")
    line = canary_line(m, trials, ["h"], 4, estimate=lambda t: 60.0)
    assert ("before the first trial, after every 4 trials or 3 minutes (whichever comes first) and after the last trial "
            "on each host: about 7 more trials") in line and "minutes counted on the trials' estimates" in line
    pool = canary_line(m, trials, ["a", "b"], 4, estimate=lambda t: 60.0)
    assert "about 8 more trials" in pool  # 6 trials each: CttCttCttC, on 2 hosts


def test_the_report_says_the_canary_rhythm_from_provenance() -> None:
    from runner.analysis.drift import canary_rhythm

    assert canary_rhythm({"every": 10, "metric": None}) == "every 10 trials"  # recorded before `minutes`
    assert canary_rhythm({"every": None, "minutes": 2.5}) == "every 2.5 minutes"
    assert canary_rhythm({"every": 10, "minutes": 30.0}) == "every 10 trials or 30 minutes (whichever came first)"


def test_canary_ids_are_deterministic_and_never_a_repetition() -> None:
    m = matrix()
    template = canary_cells(m, {"h": 4})[None]
    a, b = canary_trial(template, "h", 1), canary_trial(template, "h", 1)
    assert a == b and a.trial_id == canary_id(template.cell_id, "h", 1)
    ids = {canary_trial(template, h, r).trial_id for h in ("h", "g") for r in range(1, 50)}
    assert len(ids) == 98  # distinct per host and run
    assert not ids & {trial_id(template.cell_id, r) for r in range(1, 50)}  # never a repetition's id
    assert a.label() == "lock=ticket threads=2 canary 1"


def test_canary_cell_per_host_with_placement_each_and_relative_values() -> None:
    m = parse_matrix("campaign: c\nworkload: {name: lockbench}\nhosts: {group: g, placement: each}\n"
                     "axes: {threads: [1, '100%']}\ncanary: {cell: {threads: '100%'}, every: 2}\n")
    cells = canary_cells(m, {"a": 2, "b": 8})
    assert set(cells) == {"a", "b"}
    assert cells["a"].param_dict["threads"] == 2 and cells["b"].param_dict["threads"] == 8
    planned = {t.cell_id for t in plan(m, {"a": 2, "b": 8})}
    assert {cells["a"].cell_id, cells["b"].cell_id} <= planned  # the canary is the host's own cell


def test_canary_due_rule() -> None:
    assert canary_due(None, 5) and canary_due(5, 5) and canary_due(7, 5)
    assert not canary_due(0, 5) and not canary_due(4, 5)
    assert canary_due(1, 1) and not canary_due(0, 1)


def test_canary_due_rule_with_minutes() -> None:
    # minutes alone: due once M minutes passed since the last canary run started, with a trial in between
    assert canary_due(None, None, None, 10) and canary_due(None, None, 0.0, 10)  # none yet: always
    assert not canary_due(3, None, 599.0, 10) and canary_due(3, None, 600.0, 10) and canary_due(1, None, 3600.0, 10)
    assert not canary_due(0, None, 3600.0, 10)  # a canary run that took longer than M minutes: a trial first
    assert not canary_due(5, None, None, 10)  # no time known: the minutes never count
    assert canary_due(1, None, 90.0, 1.5) and not canary_due(1, None, 89.9, 1.5)  # fractions of minutes
    # both: whichever limit comes first
    assert canary_due(5, 5, 1.0, 10) and canary_due(2, 5, 600.0, 10) and not canary_due(4, 5, 599.0, 10)
    assert not canary_due(0, 5, 1e9, 10)
    # trials alone: the seconds are ignored
    assert not canary_due(4, 5, 1e9, None)


# -- the controller's decision, host by host, and its resume -----------------------------------------------------

def test_canaries_decide_per_host_in_a_pool() -> None:
    m = matrix()
    c = Canaries(m, canary_cells(m, {"a": 4, "b": 4}))
    c.resume(set(), [], ["a", "b"])
    seq = {"a": [], "b": []}
    for host in ["a", "b", "a", "a", "b", "a", "a", "a", "b"]:
        got = c.due(host)
        seq[host].append(f"C{got.repetition}" if got else "t")
        if got:  # the host runs the canary; its next turn gets the trial
            seq[host].append("t" if c.due(host) is None else "?")
    assert seq["a"] == ["C1", "t", "t", "t", "C2", "t", "t", "t"]
    assert seq["b"] == ["C1", "t", "t", "t"]
    assert c.started == 3


def test_canaries_every_m_minutes_with_a_fake_clock() -> None:
    m = matrix("canary: {cell: {lock: ticket, threads: 2}, minutes: 10}\n")
    c = Canaries(m, canary_cells(m, {"a": 4, "b": 4}))
    c.resume(set(), [], ["a", "b"], now=1000.0, wall=5e5)
    seq = []
    for now in (1000.0, 1001.0, 1300.0, 1599.0, 1600.0, 1600.0, 1601.0, 2200.0, 2201.0):
        got = c.due("a", now=now)
        seq.append(f"C{got.repetition}" if got else "t")
    # due before the first trial, then at the first turn 600 s after the last canary run started; never twice
    # in a row; the next 600 s count from that run's start (1600), not from the first's
    assert seq == ["C1", "t", "t", "t", "C2", "t", "t", "C3", "t"]
    assert c.due("b", now=5000.0).repetition == 1  # each host has its own clock
    assert c.last_at == {"a": 2200.0, "b": 5000.0}


def test_canaries_every_n_trials_or_m_minutes_whichever_first() -> None:
    m = matrix("canary: {cell: {lock: ticket, threads: 2}, every: 3, minutes: 1}\n")
    c = Canaries(m, canary_cells(m, {"a": 4}))
    c.resume(set(), [], ["a"], now=0.0, wall=0.0)
    seq = []
    for now in (0, 1, 2, 3, 4, 5, 65, 66, 67, 68, 69):  # quick trials: every 3 decides; a slow one: 60 s
        got = c.due("a", now=float(now))
        seq.append("C" if got else "t")
    assert "".join(seq) == "CtttCtCtttC"


def test_canaries_resume_the_clock_from_the_last_canary_run() -> None:
    m = matrix("canary: {cell: {lock: ticket, threads: 2}, minutes: 10}\n")
    cid = canary_cells(m, {"a": 4})[None].cell_id
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    trials = pd.DataFrame({"host": ["a"] * 3, "role": [CANARY, None, None], "trial_id": [canary_id(cid, "a", 1), "x", "y"],
                           "started_at": [t0 + pd.Timedelta(seconds=s) for s in (0, 10, 20)]})
    wall = t0.timestamp() + 400  # the relaunch comes 400 s after the last canary run started
    c = Canaries.start(m, {"a": 4}, set(trials["trial_id"]), trials, now=50.0, wall=wall)
    assert c.last_at == {"a": -350.0} and c.since == {"a": 2}
    assert c.due("a", now=249.0) is None  # 599 s after it
    assert c.due("a", now=250.0).trial_id == canary_id(cid, "a", 2)
    # a wall clock behind the record (clock step): no time has passed, never negative
    c = Canaries.start(m, {"a": 4}, set(trials["trial_id"]), trials, now=50.0, wall=t0.timestamp() - 100)
    assert c.last_at == {"a": 50.0}


def test_closing_canary_after_the_last_trial() -> None:
    m = matrix()
    c = Canaries(m, canary_cells(m, {"a": 4, "b": 4, "c": 4}))
    c.resume(set(), [], ["a", "b", "c"])
    assert c.closing("a") is None  # no trial yet: nothing to close
    assert c.due("a").repetition == 1 and c.closing("a") is None  # a canary run, no trial since
    assert [c.due("a") is None for _ in range(5)] == [True, True, True, False, True]  # trials 1-3, run 2, trial 4
    last = c.closing("a")
    assert last is not None and last.role == CANARY and last.host == "a" and last.repetition == 3
    assert c.closing("a") is None  # at most once per host and launch
    assert c.due("b").repetition == 1 and c.due("b") is None
    assert c.closing("b").repetition == 2 and c.closing("c") is None
    assert c.started == 5


def test_closing_canary_after_a_resume() -> None:
    m = matrix()
    cells = canary_cells(m, {"a": 4})
    cid = cells[None].cell_id
    c = Canaries(m, cells)
    c.resume({canary_id(cid, "a", 1)}, [("a", CANARY, 10.0), ("a", None, 11.0)], ["a"])
    assert c.closing("a").trial_id == canary_id(cid, "a", 2)  # the earlier launch's trial is not covered yet
    done = Canaries(m, cells)  # the closing run is recorded: a relaunch with nothing to do adds none
    done.resume({canary_id(cid, "a", 1), canary_id(cid, "a", 2)}, [("a", CANARY, 10.0), ("a", None, 11.0), ("a", CANARY, 12.0)], ["a"])
    assert done.closing("a") is None


def test_canaries_resume_where_the_last_launch_left() -> None:
    m = matrix()
    cells = canary_cells(m, {"a": 4})
    cid = cells[None].cell_id
    recorded = {canary_id(cid, "a", 1), canary_id(cid, "a", 2)}
    runs = [("a", CANARY, 10.0), ("a", None, 11.0), ("a", None, 12.0), ("a", None, 13.0), ("a", CANARY, 14.0),
            ("a", None, 15.0), ("b", None, 16.0)]
    assert since_last_canary(runs) == {"a": 1}  # b never ran a canary: left out (its next trial is one)
    c = Canaries(m, cells)
    c.resume(recorded, runs, ["a", "b"])
    assert c.due("a") is None and c.due("a") is None  # 2 and 3 trials since run 2
    nxt = c.due("a")
    assert nxt is not None and nxt.repetition == 3 and nxt.trial_id == canary_id(cid, "a", 3)
    assert c.due("b").repetition == 1 and c.recorded == 2


def test_canaries_start_from_a_trials_table() -> None:
    m = matrix()
    cid = canary_cells(m, {"a": 4})[None].cell_id
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    trials = pd.DataFrame({"host": ["a"] * 4, "role": [CANARY, None, None, None], "trial_id": [canary_id(cid, "a", 1), "x", "y", "z"],
                           "started_at": [t0 + pd.Timedelta(seconds=s) for s in (0, 1, 2, 3)]})
    c = Canaries.start(m, {"a": 4}, set(trials["trial_id"]), trials)
    assert c.since == {"a": 3} and c.next_run == {"a": 2}
    assert c.due("a").trial_id == canary_id(cid, "a", 2)
    assert Canaries.start(m, {"a": 4}, set(), None).due("a").repetition == 1


def test_a_canary_reads_the_host_state_first() -> None:
    m = matrix()
    canary = canary_trial(canary_cells(m, {"a": 4})[None], "a", 1)
    assert probes_for(canary, ("perf_stat", HOST_STATE)) == (HOST_STATE, "perf_stat")
    assert probes_for(plan(m, {"a": 4})[0], ("perf_stat",)) == ("perf_stat",)


def test_rounds_never_count_a_canary_run() -> None:
    m = parse_matrix(BASE.replace("repetitions: 2", "repetitions: {min: 2, max: 4}") + "canary: {cell: {lock: ticket, threads: 2}, every: 3}\n")
    trials = plan(m, {"a": 4})
    rounds = Rounds(m, trials)
    canary = canary_trial(canary_cells(m, {"a": 4})[None], "a", 1)
    rec = AttemptRecord.build(canary, 1, "a", "ok", None, None, started_at=time.time(), metrics=[Metric("throughput", 5.0, "ops/s", True)])
    assert rec.role == CANARY
    rounds.observe(rec)
    assert rounds.values[canary.cell_id] == {}
    frame = pd.DataFrame({"cell_id": [canary.cell_id] * 2, "metric": ["throughput"] * 2, "value": [1.0, 2.0],
                          "higher_is_better": [True] * 2, "thread": [None] * 2, "vm": [None] * 2, "probe": [None] * 2,
                          "role": [CANARY, None]})
    rounds.load(frame)
    assert rounds.values[canary.cell_id] == {"throughput": [2.0]}


# -- the host_state probe ------------------------------------------------------------------------------------------

def test_host_state_is_a_builtin_probe() -> None:
    assert "host_state" in probes.known()
    from runner.analysis.drift import STATE_SAMPLE_S

    assert STATE_SAMPLE_S == SAMPLE_S  # the report says how long the busy window is


def test_host_state_on_the_development_vm() -> None:
    got = {m.name: m.value for m in parse_state((DATA / "host_state_vm.txt").read_text())}
    assert set(got) == {"host_state.busy", "host_state.irqbalance", "host_state.load1", "host_state.procs_running"}
    assert got["host_state.busy"] == 1.0 and got["host_state.irqbalance"] == 0.0 and got["host_state.procs_running"] == 20.0


def test_host_state_on_a_lab_host() -> None:
    rows = {m.name: (m.value, m.unit) for m in parse_state((DATA / "host_state_lab.txt").read_text())}
    assert rows["host_state.governor.performance"] == (2.0, "policies") and rows["host_state.governor.powersave"] == (1.0, "policies")
    assert rows["host_state.turbo"] == (0.0, "bool")  # intel_pstate no_turbo = 1
    assert rows["host_state.numa_balancing"][0] == 1.0 and rows["host_state.irqbalance"][0] == 1.0
    assert rows["host_state.throttle_count"] == (42.0, "events")
    assert rows["host_state.busy"][0] == pytest.approx(305 / 4005)
    assert rows["host_state.procs_running"][0] == 0.0 and rows["host_state.load1"][0] == 0.12
    assert parse_state("boost 1\n")[0].value == 1.0 and parse_state("garbage\nstat0 x y\n") == []


def test_host_state_reads_here(tmp_path: Path) -> None:
    from runner.hosts.local import LocalHost
    from runner.probes.base import ProbeContext
    from runner.probes.session import ProbeWindow

    ctx = ProbeContext(host="canary-test", side="host", workdir=str(tmp_path), scratch=str(tmp_path / ".p"), tag="t")
    with ProbeWindow(LocalHost("canary-test"), [HOST_STATE], ctx) as probed:
        pass
    names = {m.name for m in probed.metrics}
    assert {"host_state.busy", "host_state.load1", "host_state.irqbalance"} <= names, probed.notes
    assert {m.probe for m in probed.metrics} == {"host_state"} and probed.notes == ()


# -- the role column ----------------------------------------------------------------------------------------------

def test_canary_runs_are_stored_with_their_role(tmp_path: Path) -> None:
    m = matrix()
    trial = plan(m, {"a": 4})[0]
    canary = canary_trial(canary_cells(m, {"a": 4})[None], "a", 1)
    store = CampaignStore(tmp_path / "c")
    types = {"lock": "str", "threads": "int"}
    store.initialise(campaign="c", workload="lockbench", matrix_text="", matrix_sha256="0" * 64, axis_types=types,
                     trial_count=1, seed=0, provenance={})
    for t in (trial, canary):
        store.write_attempt("c", "lockbench", types, AttemptRecord.build(t, 1, "a", "ok", None, None, started_at=time.time(),
                                                                        metrics=[Metric("throughput", 5.0, "ops/s", True)]))
    assert json.loads(store.meta_path.read_text())["schema_version"] == SCHEMA_VERSION == 7
    trials = store.read_table("trials").to_pandas().set_index("trial_id")
    metrics = store.read_table("metrics").to_pandas()
    assert trials.loc[canary.trial_id, "role"] == CANARY and trials.loc[trial.trial_id, "role"] == TRIAL_ROLE == "trial"
    assert list(metrics.sort_values("role")["role"]) == [CANARY, "trial"]
    st = cell_stats(metrics)  # the canary run is not a repetition of its cell
    assert list(st["n"]) == [1] and list(st["cell_id"]) == [trial.cell_id]


def test_a_version_4_dataset_reads_with_role_trial(tmp_path: Path) -> None:
    root = tmp_path / "old"
    (root / "trials" / "workload=command").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"schema_version": 4, "campaign": "old", "workload": "command",
                                                    "matrix_sha256": "0" * 64, "axis_types": {}}))
    t = pd.Timestamp("2026-01-01", tz="UTC")
    old = pa.table({"campaign": ["old"], "trial_id": ["t"], "cell_id": ["c"], "repetition": pa.array([1], pa.int32()),
                    "attempt": pa.array([1], pa.int32()), "host": ["h"], "env": ["host"], "accel": ["none"], "status": ["ok"],
                    "started_at": pa.array([t], pa.timestamp("us", tz="UTC")), "ended_at": pa.array([t], pa.timestamp("us", tz="UTC")),
                    "wall_s": [1.0], "params_json": ["{}"]})
    pq.write_table(old, root / "trials" / "workload=command" / "t.a1.ok.parquet")
    trials = CampaignStore(root).read_table("trials").to_pandas()
    assert len(trials) == 1 and (trials["role"] == "trial").all()  # null before version 6: a trial of the matrix
