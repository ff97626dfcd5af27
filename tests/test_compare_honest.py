"""`runner compare`, honest (issue 23): percent everywhere, an interval and a verdict for every cell that follow
the test and the interval, `too few` when the repetitions cannot tell, warnings when the sides differ in what
they fixed, an 80-column terminal table, --json, --fail-on for CI and an HTML page with a figure."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from runner.analysis.comparison import parameter_warnings, repetitions_to_tell, smallest_p, verdict, version_warnings
from runner.cli import main
from runner.cli.compare import compare_campaigns
from runner.records.store import AttemptRecord, CampaignStore
from runner.records.metric import Metric


def write_campaign(datasets: Path, name: str, *, factor: float = 1.0, reps: int = 6, seed: int = 0, cs_work: int = 100,
                   version: str = "0.1.0", noise: float = 0.02, locks: tuple[str, ...] = ("ticket", "mcs")) -> None:
    """A campaign on disk through the dataset store: lock x threads, `reps` repetitions, throughput and a
    latency (lower is better); `cs_work` is a fixed parameter of its matrix."""
    rng = np.random.default_rng(seed)
    axis_types = {"lock": "str", "threads": "int"}
    matrix = (f"campaign: {name}\nworkload:\n  name: lockbench\n  params: {{cs_work: {cs_work}}}\n"
              f"axes:\n  lock: [{', '.join(locks)}]\n  threads: [1, 2]\n")
    store = CampaignStore(datasets / name)
    with store:
        store.initialise(campaign=name, workload="lockbench", matrix_text=matrix,
                         matrix_sha256=hashlib.sha256(matrix.encode()).hexdigest(), axis_types=axis_types,
                         trial_count=len(locks) * 2 * reps, seed=0, provenance={"runner_version": version, "git_commit": "abc"})
        store.write_host_facts("h1", {"cpu_model": "Synthetic", "cores": 8, "kernel": "6.1"})
        for lock in locks:
            for threads in (1, 2):
                cell = hashlib.sha256(f"{lock}{threads}".encode()).hexdigest()[:16]
                for rep in range(1, reps + 1):
                    tput = 1e6 * threads * factor * rng.lognormal(0, noise)
                    store.write_attempt(name, "lockbench", axis_types, AttemptRecord(
                        trial_id=hashlib.sha256(f"{cell}{rep}".encode()).hexdigest()[:16], cell_id=cell, repetition=rep,
                        attempt=1, host="h1", status="ok", error=None, started_at=1.7e9, ended_at=1.7e9 + 5, wall_s=5.0,
                        workload_wall_s=4.0, params={"lock": lock, "threads": threads},
                        metrics=(Metric("throughput", tput, "ops/s", True), Metric("latency", 1e3 / tput, "ms", False))))


# ----- the verdict, pure -------------------------------------------------------------------------------------
def test_smallest_p_and_the_repetitions_needed() -> None:
    assert smallest_p(3, 3) == pytest.approx(0.1)
    assert smallest_p(2, 2) == pytest.approx(1 / 3)
    assert smallest_p(5, 5) == pytest.approx(2 / 252)
    assert repetitions_to_tell(0.05) == 4 and repetitions_to_tell(0.01) == 5


def test_a_big_change_at_three_repetitions_is_too_few_not_same() -> None:
    """+501 % with an interval of [+230 %, +1671 %] at 3 against 3 was called "same"."""
    v, why = verdict(3, 3, 0.1, 2.30, 16.71, True, 0.05)
    assert v == "too few"
    assert "3 against 3" in why and "smallest possible p 0.1" in why and "at least 4 per side" in why


@pytest.mark.parametrize(("q", "low", "high", "hib", "expect"), [
    (0.01, 0.10, 0.30, True, "better"),
    (0.01, 0.10, 0.30, False, "worse"),
    (0.01, -0.30, -0.10, True, "worse"),
    (0.01, -0.30, -0.10, None, "changed"),
    (0.01, -0.05, 0.30, True, "not significant"),   # the test says yes, the interval contains 0: no
    (0.20, 0.10, 0.30, True, "not significant"),
])
def test_the_verdict_follows_the_test_and_the_interval(q: float, low: float, high: float, hib: bool | None, expect: str) -> None:
    assert verdict(8, 8, q, low, high, hib, 0.05)[0] == expect


def test_parameters_and_versions_that_differ_are_warned_about() -> None:
    a = pd.DataFrame({"metric": ["t"], "lock": ["ticket"], "threads": [1], "value": [1.0]})
    b = pd.DataFrame({"metric": ["t"], "lock": ["mcs"], "value": [1.0]})
    w = parameter_warnings(a, b, "A", "B")
    assert "parameter threads (1) only in A: cells were matched without it" in w
    assert "parameter lock differs: ticket only in A; mcs only in B (those cells are not compared)" in w
    pa = {"runner_version": "1", "matrix": "workload:\n  name: lockbench\n  params: {cs_work: 100}\n"}
    pb = {"runner_version": "2", "matrix": "workload:\n  name: lockbench\n  params: {cs_work: 200, duration: 2}\n"}
    assert version_warnings(pa, pb, "A", "B") == ["runner_version differs: 1 in A, 2 in B",
                                                  "fixed parameter cs_work differs: 100 in A, 200 in B",
                                                  "fixed parameter duration differs: (unset) in A, 2 in B"]


# ----- the command ---------------------------------------------------------------------------------------------
@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    d = tmp_path / "datasets"
    write_campaign(d, "base", seed=1)
    write_campaign(d, "slower", factor=0.7, seed=2, cs_work=200, version="0.2.0")
    write_campaign(d, "three", reps=3, seed=3)
    write_campaign(d, "three-faster", reps=3, factor=6.0, seed=4)
    return d


def test_the_terminal_table_fits_80_columns_in_percent(datasets: Path) -> None:
    out = io.StringIO()
    compare_campaigns("base", "slower", datasets=datasets, console=Console(file=out, width=80))
    text = out.getvalue()
    assert max(map(len, text.splitlines())) <= 80, text
    for header in ("cell", "change [95% interval]", "q", "verdict"):
        assert header in text, text
    assert "…" not in text
    assert re.search(r"-30\.\d% \[-3\d%, -[23]\d%\]", text), text  # percent, never a fraction like -0.3
    assert "throughput lock=mcs threads=2" in text and "latency lock=ticket threads=1" in text
    assert ": 8 worse" in text and "better" not in text  # latency up and throughput down: both worse
    assert "warning: fixed parameter cs_work differs: 100 in base, 200 in slower" in text
    assert "warning: runner_version differs: 0.1.0 in base, 0.2.0 in slower" in text


def test_three_repetitions_say_too_few_with_q_shown(datasets: Path) -> None:
    out = io.StringIO()
    result = compare_campaigns("three", "three-faster", datasets=datasets, console=Console(file=out, width=80))
    assert set(result["verdict"]) == {"too few"}
    assert result["q"].notna().all()  # p and q no longer vanish at small n
    text = out.getvalue()
    assert "too few: 3 against 3 repetitions cannot show a difference" in text
    assert "+5" in text and "%" in text


def test_compare_json_is_parsed(datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "base", "slower", "--datasets", str(datasets), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["a"] == "base" and doc["b"] == "slower" and doc["q"] == 0.05
    assert doc["counts"] == {"worse": 8, "better": 0, "changed": 0, "not significant": 0, "too few": 0}
    cell = next(c for c in doc["cells"] if c["metric"] == "throughput" and c["params"]["lock"] == "ticket" and c["params"]["threads"] == 1)
    assert cell["params"] == {"workload": "lockbench", "env": "host", "accel": "none", "lock": "ticket", "threads": 1}
    assert cell["unit"] == "ops/s" and cell["higher_is_better"] is True and cell["n_a"] == cell["n_b"] == 6
    assert -35 < cell["change_low_pct"] < cell["change_pct"] < cell["change_high_pct"] < -25
    assert cell["verdict"] == "worse" and cell["q"] < 0.05
    assert any("cs_work" in w for w in doc["warnings"])


def test_fail_on_regression_for_ci(datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "--datasets", str(datasets)]
    assert main([*argv, "base", "slower", "--fail-on", "regression", "-q"]) == 3
    assert main([*argv, "slower", "base", "--fail-on", "regression"]) == 0  # the other way round it got better
    assert main([*argv, "slower", "base", "--fail-on", "change"]) == 3
    assert main([*argv, "three", "three-faster", "--fail-on", "change"]) == 0  # too few is no finding
    with pytest.raises(SystemExit) as exc:
        main([*argv, "base", "slower", "--fail-on", "nothing"])
    assert exc.value.code == 2
    assert "--fail-on: invalid choice: 'nothing'" in capsys.readouterr().err


def test_the_html_page_has_a_figure_of_every_cell(datasets: Path, tmp_path: Path) -> None:
    page = tmp_path / "cmp" / "compare.html"
    compare_campaigns("base", "slower", datasets=datasets, html=page, console=Console(file=io.StringIO()))
    doc = page.read_text()
    assert doc.count("<svg") == 1 and "change of the median, B against A (%)" in doc
    assert "8 worse" in doc and "-30." in doc and "%" in doc
    assert "fixed parameter cs_work differs" in doc
    assert list(page.parent.iterdir()) == [page]  # the figure is embedded
