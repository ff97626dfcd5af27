"""HTML report from synthetic frames, and `runner report` / `runner compare` on real Parquet campaigns."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from runner.analysis import build_report, summary_table
from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials
from runner.cli import main
from runner.records.store import AttemptRecord, CampaignStore
from runner.records.metric import Metric

LAWS = {"ticket": Law(0.02, 0.0, 1e6, collapse_at=8), "mcs": Law(0.03, 0.0005, 1e6), "ttas": Law(0.05, 0.0, 1e6)}


def test_report_from_synthetic_frames(tmp_path):
    scaling = synthetic_metrics(axes={"lock": list(LAWS), "threads": [1, 2, 4, 8, 12, 16]},
                                law=lambda p: LAWS[p["lock"]], hosts=("h1", "h2"), env="kvm", accel="tcg")
    over = synthetic_metrics(axes={"lock": ["ticket", "mcs"], "vms": [1, 2, 4], "threads": [8]}, law=lambda p: LAWS[p["lock"]],
                             per_thread=False, overcommit_loss=0.1, env="kvm", accel="tcg", seed=1)
    noisy = synthetic_metrics(axes={"lock": ["mutex"], "threads": [1, 2, 4, 8]}, law=lambda p: Law(0.1, 0.0, 1e5),
                              noise=0.4, reps=3, seed=2)
    metrics = pd.concat([scaling, over.assign(cell_id="o" + over["cell_id"]), noisy.assign(cell_id="n" + noisy["cell_id"])],
                        ignore_index=True)
    trials = synthetic_trials(metrics)
    trials.loc[0, "status"] = "failed"
    prov = synthetic_provenance("synthetic", {"h1": {"cpu_model": "Xeon A", "kernel": "6.1"},
                                              "h2": {"cpu_model": "Xeon B", "kernel": "6.1"}})
    path = build_report(metrics, trials, prov, tmp_path / "rep", bootstrap=50)
    assert path == tmp_path / "rep" / "report.html"
    doc = path.read_text()
    images = re.findall(r'<img src="([^"]+)"', doc)
    assert len(images) >= 3 and all((path.parent / src).is_file() for src in images)
    assert any("overcommit" in src for src in images)
    assert "TCG, QEMU&#x27;s software emulation" in doc and "accel=tcg" in doc
    assert "differ in cpu_model" in doc
    tables = html_tables(doc)
    fits = table_with(tables, "R^2", "collapse", "fit")
    mutex = next(r for r in fits if "lock=mutex" in r["variant"])  # noise 0.4: the USL cannot follow it
    assert float(mutex["R^2"]) < 0.90 and mutex["fit"] != "ok"
    ticket = [r for r in fits if "lock=ticket" in r["variant"] and "vms" not in r["variant"]]
    collapsed = [re.fullmatch(r"at ([\d.]+): -(\d+)% of peak at ([\d.]+)", r["collapse"]) for r in ticket]
    assert collapsed and all(collapsed), [r["collapse"] for r in ticket]  # the law collapses past 8 threads
    assert all(float(m[1]) > float(m[3]) and int(m[2]) > 0 for m in collapsed)
    assert "Cells with wide spread" in doc and "reps needed" in doc
    assert "have no successful attempt" in doc
    facts = next(t for t in tables if t and t[0] == ["fact", "h1", "h2"])  # one row per fact, one column per host
    by_fact = {row[0]: row[1:] for row in facts[1:]}
    assert by_fact["cpu_model"] == ["Xeon A", "Xeon B"] and by_fact["kernel"] == ["6.1", "6.1"]
    assert list(by_fact).index("cpu_model") < list(by_fact).index("kernel")  # the facts that differ come first
    jain = [float(r["Jain"]) for r in table_with(tables, "k", "Jain")]
    assert jain and all(0 < j <= 1 for j in jain)
    assert (path.parent / "summary.csv").is_file()
    # a second build replaces the figures instead of piling them up
    build_report(metrics, trials, prov, tmp_path / "rep", bootstrap=0, max_figures=2)
    assert len(list((path.parent / "img").glob("*.png"))) == 2
    assert "figure(s) left out" in path.read_text()


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):  # noqa: ANN001, ANN201 - HTMLParser's signature
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.row = []
            self.tables[-1].append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag):  # noqa: ANN001, ANN201
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):  # noqa: ANN001, ANN201
        if self.cell is not None:
            self.cell.append(data)


def html_tables(doc: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(doc)
    return parser.tables


def table_with(tables: list[list[list[str]]], *columns: str) -> list[dict[str, str]]:
    """The rows (as column -> text) of the one table whose header has all of `columns`."""
    found = [t for t in tables if t and set(columns) <= set(t[0])]
    assert len(found) == 1, [t[0] for t in tables if t]
    header, *rows = found[0]
    return [dict(zip(header, row)) for row in rows]


def test_summary_table_columns():
    m = synthetic_metrics(axes={"lock": ["mcs"], "threads": [1, 2]}, law=lambda p: LAWS["mcs"], reps=4)
    t = summary_table(m)
    assert list(t["threads"]) == [1, 2] and (t["n"] == 4).all()
    assert {"median", "q1", "q3", "rel_iqr", "reps_needed"} <= set(t.columns)


def write_campaign(datasets: Path, name: str, factor: float, seed: int) -> None:
    """A real campaign on disk through the dataset store: lock x threads, 5 repetitions, per-thread rows."""
    rng = np.random.default_rng(seed)
    axis_types = {"lock": "str", "threads": "int"}
    matrix = (f"campaign: {name}\nhosts: {{group: h1}}\nworkload: {{name: lockbench}}\n"
              "axes:\n  lock: [ticket, mcs]\n  threads: [1, 2, 4, 8]\nrepetitions: 5\n")
    store = CampaignStore(datasets / name)
    with store:
        store.initialise(campaign=name, workload="lockbench", matrix_text=matrix,
                         matrix_sha256=hashlib.sha256(matrix.encode()).hexdigest(), axis_types=axis_types,
                         trial_count=40, seed=0, provenance={"runner_version": "0.1.0", "git_commit": "abc"})
        store.write_host_facts("h1", {"cpu_model": "Synthetic", "cores": 8, "kernel": "6.1"})
        for lock in ("ticket", "mcs"):
            for threads in (1, 2, 4, 8):
                cell = hashlib.sha256(f"{lock}{threads}".encode()).hexdigest()[:16]
                for rep in range(1, 6):
                    total = LAWS[lock](np.array([threads]))[0] * factor * rng.lognormal(0, 0.02)
                    mets = (Metric("throughput", total, "ops/s"),) + tuple(
                        Metric("throughput", total / threads, "ops/s", thread=t) for t in range(threads))
                    store.write_attempt(name, "lockbench", axis_types, AttemptRecord(
                        trial_id=hashlib.sha256(f"{cell}{rep}".encode()).hexdigest()[:16], cell_id=cell, repetition=rep,
                        attempt=1, host="h1", status="ok", error=None, started_at=1.7e9, ended_at=1.7e9 + 5, wall_s=5.0,
                        workload_wall_s=4.0, params={"lock": lock, "threads": threads}, metrics=mets))


def test_report_and_compare_cli_on_parquet_campaigns(tmp_path, capsys):
    datasets = tmp_path / "datasets"
    write_campaign(datasets, "base", 1.0, 1)
    write_campaign(datasets, "slower", 0.7, 2)
    out = tmp_path / "out"
    assert main(["report", "base", "--datasets", str(datasets), "--out", str(out), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "ticket" in printed
    doc = (out / "report.html").read_text()
    assert all((out / src).is_file() for src in re.findall(r'<img src="([^"]+)"', doc))
    assert "Synthetic" in doc and "lock: [ticket, mcs]" in doc
    assert main(["compare", "base", "slower", "--datasets", str(datasets), "--html", str(tmp_path / "cmp.html")]) == 0
    printed = capsys.readouterr().out
    assert "8 worse" in printed
    assert "8 worse" in (tmp_path / "cmp.html").read_text()
    assert main(["report", "nope", "--datasets", str(datasets)]) == 2  # an unknown name is bad input
    err = capsys.readouterr().err
    assert "no campaign 'nope'" in err
