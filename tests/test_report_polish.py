"""Report polish and hostile options of report/compare/dataset (issue 14 items 3 and 7): no scaling law for
metrics that do not scale, numbers for people, legends outside the data, integer ticks, one column per
statistic; option values that make no sense refused with one line naming the option, exit 2."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.analysis import build_report, plots
from runner.analysis.fmt import fitted, number
from runner.analysis.report import _ci, _peak
from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials
from runner.analysis.usl import fit_usl
from runner.cli import main
from runner.errors import DatasetError, UsageError
from runner.workloads import base
from tests.test_analysis_report import write_campaign
from tests.test_hostile_input import one_line_error


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("polish") / "datasets"
    write_campaign(root, "base", 1.0, 1)
    write_campaign(root, "slower", 0.7, 2)
    return root


# ----- option values that make no sense: one line naming the option and what is allowed, exit 2 ------------
@pytest.mark.parametrize(("argv", "expect"), [
    (["--metric", "nosuch"], "--metric 'nosuch': not in campaign base; allowed: all, throughput"),
    (["--axis", "nosuch"], "--axis 'nosuch': not in the numeric axes of campaign base; allowed: threads"),
    (["--axis", "lock"], "allowed: threads"),  # a string axis is no load axis
])
def test_report_refuses_what_the_campaign_lacks(argv: list[str], expect: str, datasets: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main(["report", "base", "--datasets", str(datasets), "--out", str(out), *argv]) == 2
    assert expect in one_line_error(capsys)
    assert not out.exists()  # nothing written


def test_report_unknown_campaign(datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "nosuch", "--datasets", str(datasets)]) == 2
    assert "no campaign 'nosuch'" in (line := one_line_error(capsys)) and "known: base, slower" in line


@pytest.mark.parametrize("where", ["empty", "file"])
def test_report_where_there_is_no_campaign(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datasets = tmp_path / "ds"
    datasets.mkdir() if where == "empty" else datasets.write_text("")
    assert main(["report", "--datasets", str(datasets)]) == 2
    assert f"no campaign in {datasets}/" in one_line_error(capsys)


def test_report_out_that_cannot_be_made(datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file" / "rep", tmp_path / "file"):
        assert main(["report", "base", "--datasets", str(datasets), "--out", str(out)]) == 2
        assert one_line_error(capsys) == f"runner: --out {out}: cannot make the report directory: {tmp_path / 'file'} is not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == ""


# ----- a refused report leaves nothing behind, also through the notebook API (runner.analysis.build_report) ------
def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _small_metrics() -> pd.DataFrame:
    return synthetic_metrics(axes={"lock": ["ticket"], "threads": [1, 2, 4]}, law=lambda p: Law(0.05, 0.001, 1e6),
                             per_thread=False, reps=2)


REFUSALS = [  # (id, build_report's arguments beside the metrics, the metrics, the error, what its line says)
    ("unknown_axis", {"axis": "nosuch"}, _small_metrics, UsageError, "no axis 'nosuch' in the data; axes: "),
    ("unknown_metric", {"metric_names": ["nosuch"]}, _small_metrics, UsageError, "no metric 'nosuch' in the data; known: throughput"),
    ("no_total_rows", {}, lambda: _small_metrics().assign(thread=0), DatasetError, "the metrics table has no total rows"),
]


@pytest.mark.parametrize(("kwargs", "make", "error", "expect"), [pytest.param(*r[1:], id=r[0]) for r in REFUSALS])
def test_refused_report_leaves_nothing_behind(kwargs: dict, make, error: type, expect: str, tmp_path: Path) -> None:  # noqa: ANN001
    """build_report used to make the directory (and remove an earlier report's figures) before its checks."""
    out = tmp_path / "new" / "rep"
    with pytest.raises(error, match=re.escape(expect)):
        build_report(make(), None, None, out, bootstrap=0, **kwargs)
    assert not (tmp_path / "new").exists()
    earlier = tmp_path / "earlier"  # an earlier report there stays whole: figures, page, table
    build_report(_small_metrics(), None, None, earlier, bootstrap=0)
    before = _tree(earlier)
    assert any(name.startswith("img/") for name in before) and "report.html" in before
    with pytest.raises(error, match=re.escape(expect)):
        build_report(make(), None, None, earlier, bootstrap=0, **kwargs)
    assert _tree(earlier) == before


def test_report_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "rep"):
        with pytest.raises(UsageError, match=f"^{re.escape(str(out))}: cannot make the report directory: "):
            build_report(_small_metrics(), None, None, out, bootstrap=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == ""


@pytest.mark.parametrize("argv", [["--bootstrap", "-1"], ["--bootstrap", "x"], ["--bootstrap", "10000000"]])
def test_report_options_out_of_range(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", "base", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[0]}" in err and "allowed" in err and "Traceback" not in err


@pytest.mark.parametrize("q", ["2", "0", "1", "-0.1", "nan", "inf", "x"])
def test_compare_q_out_of_range(q: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", "base", "slower", "--q", q])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --q" in err and "allowed: a number greater than 0 and less than 1" in err


@pytest.mark.parametrize(("argv", "expect"), [
    (["base", "slower", "--metric", "nosuch"], "--metric 'nosuch': not in campaign base and slower; allowed: throughput"),
    (["base", "nosuch"], "no campaign 'nosuch'"),
    (["nosuch", "base"], "no campaign 'nosuch'"),
    (["base", "--vary", "nosuch=a,b"], "--vary 'nosuch': not in the axes of campaign base; allowed: lock, threads"),
    (["base", "--vary", "lock=ticket,nosuch"], "--vary: no lock=nosuch in the data; allowed values of lock: mcs, ticket"),
    (["base", "--vary", "threads=abc,2"], "--vary: no threads=abc in the data; allowed values of threads: 1, 2, 4, 8"),
    (["base", "--vary", "lock"], "expected AXIS=BASE,OTHER"),
    (["base"], "needs two campaigns"),
])
def test_compare_refusals(argv: list[str], expect: str, datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", *argv, "--datasets", str(datasets)]) == 2
    assert expect in one_line_error(capsys)


def test_compare_vary_matches_numbers_by_value(datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "base", "--vary", "threads=2.0,4", "--datasets", str(datasets)]) == 0
    assert "threads=4 against base threads=2.0" in capsys.readouterr().out


def test_compare_html_that_cannot_be_written(datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert main(["compare", "base", "slower", "--datasets", str(datasets), "--html", str(tmp_path / "file" / "c.html")]) == 2
    assert "--html" in one_line_error(capsys)


@pytest.mark.parametrize("action", ["verify", "import"])
def test_dataset_archive_that_is_not_there(action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), action, str(tmp_path / "nosuch.tar.gz")]) == 2
    assert "nosuch.tar.gz: no such archive" in one_line_error(capsys)
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), action, str(tmp_path)]) == 2
    assert "not an archive file" in one_line_error(capsys)
    assert not (tmp_path / "ds").exists()


def test_dataset_pack_unknown_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "--datasets", str(tmp_path), "pack", "nosuch", "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert "no campaign 'nosuch'" in one_line_error(capsys)


# ----- the workload says which metrics scale ----------------------------------------------------------------
def test_workloads_say_which_metrics_scale() -> None:
    said = base.scaling_metrics()
    assert said["lockbench"] == {"throughput", "aggregate_throughput"}
    assert said["gmake"] == {"builds_per_hour"}
    assert "command" not in said  # its metrics are the user's: it cannot say


def _lockbench_with_fairness() -> pd.DataFrame:
    m = synthetic_metrics(axes={"lock": ["ticket", "mcs"], "threads": [1, 2, 4, 8]}, law=lambda p: Law(0.05, 0.001, 1e6),
                          per_thread=False, reps=3)
    fair = m.assign(metric="jain_fairness", unit="index", value=1 - 0.01 * m["threads"])
    return pd.concat([m, fair], ignore_index=True)


def test_no_scaling_law_for_fairness(tmp_path: Path) -> None:
    metrics = _lockbench_with_fairness()
    path = build_report(metrics, synthetic_trials(metrics), synthetic_provenance("c"), tmp_path / "rep", bootstrap=20,
                        scaling_metrics=base.scaling_metrics())
    doc = path.read_text()
    fair = doc[doc.index("metric=jain_fairness</h3>"):]
    fair = fair[:fair.index("</table>")]
    assert "sigma" not in fair and "peak N*" not in fair and "median at the largest load" in fair
    thr = doc[doc.index("metric=throughput</h3>"):]
    assert "sigma (contention)" in thr[:thr.index("</table>")]
    # without what the workload says, every higher-is-better metric is taken to scale (the old behaviour)
    doc = build_report(metrics, None, None, tmp_path / "rep2", bootstrap=0).read_text()
    fair = doc[doc.index("metric=jain_fairness</h3>"):]
    assert "sigma (contention)" in fair[:fair.index("</table>")]


def test_figures_of_metrics_that_do_not_scale_have_no_speedup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    lv = np.array([1.0, 2.0, 3.0])  # matplotlib alone would tick at 1.25, 1.5, ...
    series = [plots.Series(f"lock={i}", lv, 1 - 0.01 * lv, 0.9 - 0.01 * lv, 1 - 0.005 * lv) for i in range(5)]
    plots.scaling(tmp_path / "a.png", series, axis="threads", ylabel="jain_fairness", title="t", speedup=False)
    plots.scaling(tmp_path / "b.png", series, axis="threads", ylabel="throughput", title="t")
    assert [len(f.axes) for f in figures] == [1, 3]
    for fig in figures:
        assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # legend below, not on data
        ticks = fig.axes[0].get_xticks()
        assert np.all(ticks == np.round(ticks))  # no 2.5 threads


def test_fractional_loads_keep_fractional_ticks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    lv = np.array([0.5, 1.0, 1.5])
    plots.scaling(tmp_path / "a.png", [plots.Series("x", lv, lv, lv, lv)], axis="load", ylabel="y", title="t")
    ticks = figures[0].axes[0].get_xticks()
    assert np.any(ticks != np.round(ticks))


def test_overcommit_figure_legend_outside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    k = np.array([1, 2, 4])
    plots.overcommit(tmp_path / "o.png", [plots.OvercommitSeries("v", k, 1 / k, 1 / k, 1 / k, np.ones(3))], title="t")
    fig = figures[0]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    ticks = fig.axes[1].get_xticks()
    assert np.all(ticks == np.round(ticks))


# ----- numbers for people -------------------------------------------------------------------------------------
def test_numbers_for_people() -> None:
    assert number(4.941e-324) == "0" and number(-5e-320) == "0"
    assert number(2.5e-10) == "2.5e-10"  # a measured small value stays
    assert fitted(2.5e-13) == "0" and fitted(0.0312) == "0.0312"
    assert number(float("nan")) == "" and number(None) == "" and number(pd.NA) == ""
    assert number(float("inf")) == "inf" and number(np.int64(3)) == "3" and number(True) == "True"
    assert number(1234567.0) == "1.235e+06" and number("x") == "x"


def test_fit_table_shows_zero_and_no_peak() -> None:
    n = np.array([1, 2, 4, 8, 16], dtype=float)
    falling = fit_usl(n, 100 / n, bootstrap=0)  # X(N) = 100 / N: N* < 1
    assert falling.peak_n < 1
    peak, x = _peak(falling)
    assert peak.startswith("no peak") and x == ""
    linear = fit_usl(n, 100 * n, bootstrap=20)
    assert _peak(linear)[0] == "none (linear scaling)"
    assert _ci(5e-324, (0.0, 4.9e-324)) == "0 [0, 0]"
    assert not re.search(r"e-3\d\d", _ci(linear.sigma, linear.sigma_ci))


def test_wide_spread_table_has_one_column_per_statistic(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["mutex", "mcs"], "threads": [1, 2, 4]}, law=lambda p: Law(0.1, 0.0, 1e5),
                          noise=0.5, reps=3, seed=2, per_thread=False)
    doc = build_report(m, None, None, tmp_path / "rep", bootstrap=0).read_text()
    wide = doc[doc.index("<h2>Cells with wide spread"):]
    wide = wide[:wide.index("</table>")]
    header = re.findall(r"<th>([^<]*)</th>", wide)
    assert header == ["lock", "threads", "metric", "reps", "median", "q1", "q3", "CI half-width", "reps needed"]
    first = re.findall(r"<td>([^<]*)</td>", wide)[:len(header)]
    assert first[0] in ("mutex", "mcs") and first[2] == "throughput" and first[3] == "3"
    assert not any("=" in cell for cell in first)  # no 'n=3 median=... q1=...' record in a cell
    assert math.isfinite(float(first[4]))


def test_the_cpu_count_label_stays_inside_the_figure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The study's load axis ends at the host's CPU count (1, 2 on its 2-CPU hosts): the dotted line sits at the
    right edge, and its label ran out of the figure ("2 host CP"). It is written inside, to the line's left."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    levels = np.array([1.0, 2.0])
    line = plots.Line("env=kvm accel=kvm", levels, np.array([1.0, 0.6]), np.array([0.9, 0.5]), np.array([1.1, 0.7]))
    plots.normalised(tmp_path / "f.png", [line], axis="vcpus", ylabel="throughput", title="t", cpus=[(2.0, "host CPUs")])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    [label] = [t for t in fig.axes[0].texts if t.get_text() == "2 host CPUs"]
    box, width = label.get_window_extent(renderer), fig.bbox.width
    assert 0 <= box.x0 and box.x1 <= width
