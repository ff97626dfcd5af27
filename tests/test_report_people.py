"""The report, for people (issue 23 item 3) and the three questions of the lab's study (issue 24 item 4): correct
counts, host facts as rows with the differences first, legible figures drawn at 2x with the CPU count on the load
axis, no raw -1 or True/False, a hint where a section is absent, one figure per finding with accel and `nested` in
its legends, and drops with contention told from the collapse past the CPU count. On synthetic data shaped like
the study and on a real lockbench campaign on this machine."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runner.analysis import build_report, plots, summary_table
from runner.analysis.collapse import detect_collapse, split_at_cpus
from runner.analysis.findings import cpu_count, host_cpus, is_virtual
from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials
from runner.cli import main
from tests.report_study import HOST_CPUS, host_facts, study

PROJECT = Path(__file__).resolve().parents[1]


def _section(doc: str, heading: str) -> str:
    part = doc[doc.index(heading):]
    return part[:part.index("<h2>", len(heading))] if "<h2>" in part[len(heading):] else part


def _text(html_part: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html_part).split())


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """The study's report, with every figure's arguments kept (drawn here, in one process)."""
    calls: dict[str, list] = {}
    mp = pytest.MonkeyPatch()
    for name in ("normalised", "overcommit_bars", "scaling", "overcommit"):
        real = getattr(plots, name)
        mp.setattr(plots, name, lambda path, _real=real, _name=name, **kw: calls.setdefault(_name, []).append(kw) or _real(path, **kw))
    mp.setattr("runner.analysis.report.INLINE_FIGURES", 100)
    metrics, trials, prov = study()
    prov["hosts"]["other"] = {**host_facts(cmdline_words=3), "hypervisor": "none", "cpu": {"model": "Other", "threads": 8}}
    try:
        path = build_report(metrics, trials, prov, tmp_path_factory.mktemp("study"), bootstrap=0)
    finally:
        mp.undo()
    return path, calls


def test_counts_are_cells_not_cell_metric_pairs(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["a", "b", "c", "d"], "threads": [1, 2, 4, 8, 16, 32]}, law=lambda p: Law(0.02, 0.0, 1e6),
                          per_thread=False)
    extra = [m.assign(metric=name) for name in ("latency", "fairness", "ops", "cycles")]
    doc = build_report(pd.concat([m, *extra], ignore_index=True), None, None, tmp_path, bootstrap=0).read_text()
    assert "24 cells, 5 metrics, 600 metric rows" in doc and "120 cells" not in doc


def test_hosts_are_rows_with_differences_first(drawn: tuple[Path, dict]) -> None:
    doc = drawn[0].read_text()
    hosts = _section(doc, "<h3>Hosts</h3>")
    head = re.findall(r"<th>([^<]*)</th>", hosts[:hosts.index("</tr>")])
    assert head == ["fact", "other", "vmhost"]
    first = hosts[:hosts.index("</table>")]
    rows = re.findall(r'<tr( class="differ")?><td>([^<]*)</td>', first)
    marked = [bool(cls) for cls, _ in rows]
    assert marked == sorted(marked, reverse=True) and any(marked) and not all(marked)  # differences first, marked
    assert {k for cls, k in rows if cls} >= {"cpu_model", "cmdline", "cpus", "hypervisor"}
    assert "{&quot;" not in first and '{"' not in first  # no raw JSON in the table of facts
    assert "All facts the collector took" in hosts


def test_tables_say_yes_no_and_blank_for_unknown(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["a"], "threads": [1, 2]}, law=lambda p: Law(0.02, 0.0, 1e6), reps=1, per_thread=False)
    m2 = synthetic_metrics(axes={"lock": ["b"], "threads": [1, 2]}, law=lambda p: Law(0.02, 0.0, 1e6), reps=3, noise=0.5, seed=3,
                           per_thread=False)
    both = pd.concat([m, m2.assign(cell_id="x" + m2["cell_id"], trial_id="x" + m2["trial_id"])], ignore_index=True)
    doc = build_report(both, None, None, tmp_path, bootstrap=0).read_text()
    cells = _section(doc, "<h2>Cells</h2>")
    tds = re.findall(r"<td>([^<]*)</td>", cells)
    assert "True" not in tds and "False" not in tds and "-1" not in tds and "yes" in tds and "no" in tds
    assert summary_table(both)["reps_needed"].isna().sum() == 2  # one repetition: not known, not -1
    csv = (tmp_path / "summary.csv").read_text()
    assert ",-1\n" not in csv and ",-1," not in csv


def test_hints_where_sections_are_absent(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["ttas"], "threads": [1, 2]}, law=lambda p: Law(0.05, 0.001, 1e6), reps=3)
    doc = build_report(m, synthetic_trials(m), synthetic_provenance("s"), tmp_path, bootstrap=0).read_text()
    hints = [_text(h) for h in re.findall(r'<p class="hint">(.*?)</p>', doc)]
    assert any("add vms: [1, 2] to the axes" in h for h in hints)  # over-commit
    assert any("add canary: {cell:" in h and "probes: [host_state]" in h for h in hints)  # drift and host state
    assert any("guest_kernel: [pv, nopv]" in h for h in hints) and any("env: [host, container, kvm]" in h for h in hints)


def test_figures_are_2x_with_legible_legends(drawn: tuple[Path, dict]) -> None:
    path, _ = drawn
    doc = path.read_text()
    for src, width in re.findall(r'<img src="([^"]+)"[^>]*width="(\d+)"', doc):
        png = path.parent / src
        assert plots.shown_width(png) == int(width) and int(width) <= 1100  # fits the page at the size it is drawn for
    assert len(re.findall(r"<img ", doc)) == len(re.findall(r'<img [^>]*width="', doc))
    assert plots.LEGEND_FONT >= 8 and plots.SCALE == 2


def test_legend_entries_stay_inside_the_figure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures: list[Figure] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    lv = np.array([1.0, 2.0, 4.0])
    long = [plots.Line(f"env=kvm accel=kvm guest_kernel=kernel-with-a-long-name-{i} nested", lv, lv, lv, lv) for i in range(5)]
    plots.normalised(tmp_path / "a.png", long, axis="vcpus", ylabel="x", title="t", cpus=[(2.0, "host CPUs")])
    fig = figures[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    box = fig.legends[0].get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    assert all(t.get_fontsize() >= 8 for t in fig.legends[0].get_texts())
    marks = [t.get_text() for t in fig.axes[0].texts]
    assert marks == ["2 host CPUs"]


def test_the_three_findings(drawn: tuple[Path, dict]) -> None:
    path, calls = drawn
    doc = path.read_text()
    assert {"img/finding_env.png", "img/finding_kernel.png", "img/finding_overcommit.png"} <= set(re.findall(r'<img src="([^"]+)"', doc))
    env, kernel = calls["normalised"]
    env_labels = [line.label for line in env["lines"]]
    assert "env=host accel=none" in env_labels and "env=container accel=none" in env_labels
    assert all(lb.startswith("env=kvm accel=kvm") and lb.endswith(" nested") for lb in env_labels if "kvm" in lb)
    assert env["cpus"] == [(float(HOST_CPUS), "host CPUs")] and env["axis"] == "vcpus"
    for line in env["lines"]:
        assert line.ratio[0] == 1.0  # normalised to the smallest load (1 vCPU)
    assert sorted(line.label.split()[0] for line in kernel["lines"]) == ["guest_kernel=default", "guest_kernel=nopv",
                                                                          "guest_kernel=pv"]
    assert all("accel=kvm" in line.label and "nested" in line.label for line in kernel["lines"])
    (bars,) = calls["overcommit_bars"]
    by = {b.label.split()[0]: b for b in bars["bars"]}
    assert set(by) == {"guest_kernel=nopv", "guest_kernel=pv"}
    for b in by.values():
        assert list(b.k) == [1, 2, 4] and b.efficiency[0] == pytest.approx(1, abs=0.05)
        assert b.efficiency[2] < b.efficiency[1] < 1 and 1 / 4 < b.jain[2] < 1 and "accel=kvm" in b.label


def test_contention_is_told_from_the_collapse_past_the_cpus() -> None:
    # 2 CPUs: a drop at 2 threads (contention) and the collapse at 3 (preemption), as a ticket lock does
    n = np.repeat([1, 2, 3, 4], 5)
    x = np.repeat([700e3, 450e3, 20e3, 15e3], 5) * np.tile([0.98, 0.99, 1.0, 1.01, 1.02], 4)
    assert detect_collapse(n, x).collapse_n == 2  # what the report said before: it hides the collapse that matters
    split = split_at_cpus(n, x, 2)
    assert split.contention.collapsed and split.contention.collapse_n == 2
    assert split.past.collapsed and split.past.collapse_n == 3 and split.past.peak_n == 2
    assert split.main() is split.past
    graceful = split_at_cpus(n, np.repeat([700e3, 650e3, 600e3, 590e3], 5), 2)
    assert not graceful.past.collapsed and graceful.main() is None


def test_cpu_counts_of_hosts_and_guests() -> None:
    rows = pd.DataFrame({"host": ["h"], "trial_id": ["t"]})
    facts = {"h": host_facts()}
    assert host_cpus(facts["h"]) == HOST_CPUS and host_cpus({"cpus": 2}) == 2 and host_cpus({}) is None
    assert is_virtual(facts["h"]) and not is_virtual({"hypervisor": "none", "cpu": {"hypervisor_flag": False}})
    assert not is_virtual({"hypervisor": "docker", "cpu": {"hypervisor_flag": True}})  # a container is not a VM
    assert cpu_count({"env": "host"}, rows, "threads", None, facts) == (HOST_CPUS, "host CPUs")
    assert cpu_count({"env": "kvm", "vcpus": 2}, rows, "threads", None, facts) == (2.0, "guest vCPUs")
    assert cpu_count({"env": "kvm", "vcpus": 2}, rows, "vcpus", None, facts) == (HOST_CPUS, "host CPUs")
    trials = pd.DataFrame({"trial_id": ["t"], "guest_vcpus": [3]})
    assert cpu_count({"env": "container"}, rows, "threads", trials, facts) == (3.0, "container CPUs")


@pytest.mark.integration
def test_a_real_lockbench_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lockbench on this machine (2 or more CPUs), threads up to twice the CPUs: the report marks the host's CPU
    count, and tells for every lock what happened at and past it."""
    matrix = tmp_path / "people.yml"
    matrix.write_text(f"campaign: people\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
                      "workload: {name: lockbench, params: {duration: 0.1}}\n"
                      "axes:\n  lock: [ttas, ticket]\n  threads: [1, '100%', '200%']\nrepetitions: 3\ntimeout: 30\n")
    assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 0
    capsys.readouterr()
    out = tmp_path / "rep"
    assert main(["report", "people", "--datasets", str(tmp_path / "ds"), "--out", str(out), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    assert "-1" not in printed.split("report:")[0]
    doc = (out / "report.html").read_text()
    assert "6 cells," in doc
    scaling = _text(_section(doc, "<h2>Scaling along threads</h2>"))
    cpus = os.cpu_count()
    assert f"the {cpus} host CPUs" in scaling  # every lock's row says what happened at and past the CPU count
    assert scaling.count(f"{cpus} host CPUs") >= 2
    assert "True" not in _text(_section(doc, "<h2>Cells</h2>"))
    assert all((out / src).is_file() and plots.shown_width(out / src) > 0 for src in re.findall(r'<img src="([^"]+)"', doc))
    assert (tmp_path / "ds" / "people" / "schema.json").is_file() and (tmp_path / "ds" / "people" / "DATA-CARD.md").is_file()


def test_findings_never_pool_campaigns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kept: list[list[str]] = []
    real = plots.normalised
    monkeypatch.setattr(plots, "normalised", lambda path, **kw: kept.append([line.label for line in kw["lines"]]) or real(path, **kw))
    monkeypatch.setattr("runner.analysis.report.INLINE_FIGURES", 100)
    parts = [synthetic_metrics(axes={"lock": ["ticket"], "threads": [1, 2, 4]}, law=lambda p: Law(0.02, 0.0, 1e6), per_thread=False,
                               campaign=name, seed=i) for i, name in enumerate(("before", "after"))]
    build_report(pd.concat(parts, ignore_index=True), None, None, tmp_path, bootstrap=0)
    assert kept == [["campaign=after", "campaign=before"]]


def test_findings_skip_cells_the_load_axis_does_not_apply_to(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["ticket", "mcs"], "threads": [1, 2, 4]}, law=lambda p: Law(0.02, 0.0, 1e6), per_thread=False)
    m["threads"] = m["threads"].astype("float64")
    m.loc[(m["lock"] == "mcs").to_numpy(), "threads"] = np.nan  # an axis that does not apply to these cells
    doc = build_report(m, None, None, tmp_path, bootstrap=0).read_text()
    assert '<img src="img/finding_env.png"' in doc


def test_a_parameter_that_restates_the_load_does_not_split_the_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """stress-ng's `workers: "100%"` resolves to each cell's vCPUs: a column that takes one value per load is no
    variant of its own (the study's first figure was empty: every line a single point)."""
    kept: list[list[tuple[str, int]]] = []
    real = plots.normalised
    monkeypatch.setattr(plots, "normalised", lambda path, **kw: kept.append([(line.label, len(line.levels)) for line in kw["lines"]])
                        or real(path, **kw))
    monkeypatch.setattr("runner.analysis.report.INLINE_FIGURES", 100)
    m = synthetic_metrics(axes={"lock": ["ticket", "mcs"], "vcpus": [1, 2, 4]}, law=lambda p: Law(0.02, 0.0, 1e6), per_thread=False,
                          load_axis="vcpus")
    m["workers"] = m["vcpus"]
    build_report(m, None, None, tmp_path, bootstrap=0, axis="vcpus")
    assert kept and sorted(kept[0]) == [("lock=mcs", 3), ("lock=ticket", 3)]
