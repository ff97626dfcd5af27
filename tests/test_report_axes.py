"""The report keeps every axis (issue 24 item 3): each axis with more than one value is part of each cell's key in
the tables, summary.csv, the figures and their legends, under its own name, whatever that name is: an axis named
like a statistic (`n`, `median`, `k`), an axis whose values are names, and the guest kernel, which the metrics
table has no column for."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.analysis import build_report, plots, summary_table
from runner.analysis.axes import own_names, shown_frame, with_trial_axes
from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials
from runner.cli import main
from runner.errors import MatrixError
from runner.matrix.load import load_matrix

PROJECT = Path(__file__).resolve().parents[1]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _kernel_campaign() -> tuple[pd.DataFrame, pd.DataFrame]:
    """An over-commit campaign shaped like examples/overcommit.yml: lock x vms x guest_kernel, the guest kernel
    in the trials' parameters only (a fixed column of the trials table, no column of the metrics table)."""
    laws = {"default": Law(0.02, 0.0, 1e6), "nopvspin": Law(0.02, 0.0, 5e5)}
    m = synthetic_metrics(axes={"lock": ["ttas", "ticket"], "vms": [1, 2], "guest_kernel": ["default", "nopvspin"],
                                "threads": [2]}, law=lambda p: laws[p["guest_kernel"]], per_thread=False, env="kvm",
                          accel="kvm", overcommit_loss=0.3)
    trials = synthetic_trials(m)
    trials["params_json"] = [json.dumps({"lock": r.lock, "vms": int(r.vms), "guest_kernel": r.guest_kernel, "threads": 2,
                                         "env": "kvm"}) for r in trials.itertuples()]
    trials["guest_kernel"] = trials.pop("guest_kernel")
    return m.drop(columns=["guest_kernel"]), trials


def test_guest_kernel_comes_back_from_the_trials(tmp_path: Path) -> None:
    metrics, trials = _kernel_campaign()
    assert "guest_kernel" not in metrics.columns
    table = summary_table(metrics, trials=trials, metric="throughput")
    assert list(table.columns[:6]) == ["campaign", "workload", "env", "accel", "lock", "vms"]
    assert "guest_kernel" in table.columns
    assert len(table) == 8 and not table.duplicated(["lock", "vms", "guest_kernel"]).any()  # one row per cell
    path = build_report(metrics, trials, synthetic_provenance("synthetic"), tmp_path / "rep", bootstrap=0)
    rows = _csv(tmp_path / "rep" / "summary.csv")
    assert {r["guest_kernel"] for r in rows} == {"default", "nopvspin"}
    assert len({(r["lock"], r["vms"], r["guest_kernel"], r["metric"]) for r in rows}) == len(rows)
    doc = path.read_text()
    over = doc[doc.index("<h2>Over-commit</h2>"):]
    over = over[:over.index("<h2>", 5)]
    assert "lock=ticket guest_kernel=default accel=kvm" in over and "lock=ticket guest_kernel=nopvspin accel=kvm" in over


def test_a_guest_kernels_catalog_entry_is_named_by_the_kernel_not_shown_beside_it(tmp_path: Path) -> None:
    """The trials' parameters carry each guest kernel's catalog entry (guest_kernel_spec: a recipe, a path and
    command line); it varies with guest_kernel only, so guest_kernel names it: no column of JSON beside it."""
    metrics, trials = _kernel_campaign()
    specs = {"default": {"build": {"source": "linux-source", "config": "defconfig"}},
             "nopvspin": {"kernel": "/boot/vmlinuz", "cmdline": "nopvspin"}}
    trials["params_json"] = [json.dumps({**json.loads(p), "guest_kernel_spec": specs[k], "guest_image_spec": {"k": k}})
                             for p, k in zip(trials["params_json"], trials["guest_kernel"], strict=True)]
    table = summary_table(metrics, trials=trials, metric="throughput")
    assert "guest_kernel" in table.columns and not {"guest_kernel_spec", "guest_image_spec"} & set(table.columns)
    assert len(table) == 8
    build_report(metrics, trials, synthetic_provenance("synthetic"), tmp_path / "rep", bootstrap=0)
    assert "guest_kernel_spec" not in (tmp_path / "rep" / "summary.csv").read_text()


def test_overcommit_figure_has_a_legend_entry_per_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    drawn: list[tuple[str, list[str]]] = []

    def keep(path: Path, *, series, title) -> Path:  # noqa: ANN001 - plots.overcommit's signature
        drawn.append((title, [s.label for s in series]))
        return path

    monkeypatch.setattr(plots, "overcommit", keep)
    monkeypatch.setattr("runner.analysis.report.INLINE_FIGURES", 100)  # draw here, where the patch holds
    metrics, trials = _kernel_campaign()
    agg = metrics[metrics["vm"].isna().to_numpy()].assign(metric="aggregate_throughput")  # a per-trial total only
    build_report(pd.concat([metrics, agg], ignore_index=True), trials, None, tmp_path / "rep", bootstrap=0)
    assert len(drawn) == 1  # not a second figure of aggregate_throughput with one point at k = 1
    title, labels = drawn[0]
    assert "metric=throughput" in title
    assert sorted(labels) == [f"lock={lock} guest_kernel={kernel} accel=kvm" for lock in ("ticket", "ttas")
                              for kernel in ("default", "nopvspin")]


@pytest.mark.parametrize("name", ["n", "median", "k", "efficiency", "q1", "hosts", "reps_needed"])
def test_an_axis_named_like_a_statistic(name: str, tmp_path: Path) -> None:
    m = synthetic_metrics(axes={name: [1, 3], "lock": ["ticket", "mcs"], "threads": [1, 2, 4]},
                          law=lambda p: Law(0.01 * p[name], 0.0, 1e6), reps=3, per_thread=False)
    table = summary_table(m)
    assert table[name].tolist() == [1] * 6 + [3] * 6  # the axis, under its own name
    stat = "stat_" + name
    if name in ("n", "median", "q1", "reps_needed"):  # the statistic of that name is kept beside it
        assert stat in table.columns
    if name == "n":
        assert (table["stat_n"] == 3).all()
    path = build_report(m, synthetic_trials(m), synthetic_provenance("synthetic"), tmp_path / "rep", bootstrap=0)
    doc = path.read_text()
    assert not re.search(r"axis:\w", doc)  # no private name (axes.AXIS_PREFIX) shows
    assert f"{name}=1 lock=mcs" in doc and f"{name}=3 lock=ticket" in doc
    rows = _csv(tmp_path / "rep" / "summary.csv")
    assert {r[name] for r in rows} == {"1", "3"} and len(rows) == 12


def test_the_load_axis_may_be_named_like_a_statistic(tmp_path: Path) -> None:
    m = synthetic_metrics(axes={"lock": ["ticket"], "n": [1, 2, 4, 8]}, law=lambda p: Law(0.02, 0.001, 1e6), load_axis="n",
                          per_thread=False)
    doc = build_report(m, None, None, tmp_path / "rep", axis="n", bootstrap=0).read_text()
    assert "<h2>Scaling along n</h2>" in doc


def test_axis_values_that_are_names(tmp_path: Path) -> None:
    names = ["ticket lock", "mcs/queued", "<ttas>", "naïve"]
    m = synthetic_metrics(axes={"variant": names, "threads": [1, 2]}, law=lambda p: Law(0.02, 0.0, 1e6), per_thread=False)
    table = summary_table(m)
    assert sorted(set(table["variant"])) == sorted(names)
    doc = build_report(m, None, None, tmp_path / "rep", bootstrap=0).read_text(encoding="utf-8")
    assert "variant=&lt;ttas&gt;" in doc and "variant=naïve" in doc and "<ttas>" not in doc


def test_the_matrix_refuses_axes_named_like_fixed_columns(tmp_path: Path) -> None:
    for name in ("metric", "value"):
        path = tmp_path / f"{name}.yml"
        path.write_text(f"campaign: c\nworkload: {{name: command, params: {{run: 'true'}}}}\naxes:\n  {name}: [1, 2]\n")
        with pytest.raises(MatrixError, match=f"axes.{name}: '{name}' is a column of the dataset; give the parameter another name"):
            load_matrix(path)


def test_own_names_round_trip() -> None:
    m = synthetic_metrics(axes={"n": [1, 2], "threads": [1, 2]}, law=lambda p: Law(0.0, 0.0, 1.0), reps=2, per_thread=False)
    renamed, (none,), own = own_names(m, None)
    assert none is None and own == {"axis:n": "n"} and "n" not in renamed.columns
    back = shown_frame(renamed.assign(n=7))
    assert list(back["n"].unique()) == [1, 2] and (back["stat_n"] == 7).all()
    assert with_trial_axes(m, None) is m


def test_a_command_campaign_with_statistic_named_axes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bug of issue 24: a command campaign with an axis `n` ran, then `runner report` ended in KeyError: 'n'."""
    matrix = tmp_path / "stat-axes.yml"
    matrix.write_text(
        "campaign: stat-axes\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: command, params: {run: 'echo \"{\\\"ops\\\": $((RUNNER_N * 100))}\"', estimate: 0.1}}\n"
        "axes:\n  n: [1, 2, 4]\n  median: [low, high]\n"
        "repetitions: 2\ntimeout: 60\n")
    ds = tmp_path / "ds"
    assert main(["launch", str(matrix), "--datasets", str(ds)]) == 0
    capsys.readouterr()
    out = tmp_path / "rep"
    assert main(["report", "stat-axes", "--datasets", str(ds), "--out", str(out), "--bootstrap", "0", "--axis", "n"]) == 0
    printed = capsys.readouterr().out
    assert "KeyError" not in printed
    header = next(line for line in printed.splitlines() if "metric" in line and "median" in line)
    assert re.search(r"\bn\b", header) and "stat_n" in header and "stat_median" in header
    rows = _csv(out / "summary.csv")
    assert len(rows) == 6 and {(r["n"], r["median"]) for r in rows} == {(n, m) for n in "124" for m in ("low", "high")}
    assert all(float(r["stat_median"]) == 100 * int(r["n"]) for r in rows) and all(r["stat_n"] == "2" for r in rows)
    doc = (out / "report.html").read_text()
    assert "<h2>Scaling along n</h2>" in doc and "median=high" in doc and not re.search(r"axis:\w", doc)
    assert all((out / src).is_file() for src in re.findall(r'<img src="([^"]+)"', doc))
    assert np.isfinite(float(rows[0]["stat_median"]))
    assert main(["report", "stat-axes", "--datasets", str(ds), "--out", str(out), "--bootstrap", "0", "--json"]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert {(c["n"], c["median"]) for c in cells} == {(n, m) for n in (1, 2, 4) for m in ("low", "high")}
    assert all(c["stat_n"] == 2 and c["stat_median"] == 100 * c["n"] for c in cells)


def test_runner_report_on_a_stored_overcommit_campaign_keeps_the_guest_kernel(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """As examples/overcommit.yml stores it: guest_kernel is an axis of the matrix but a fixed column of the trials
    table (the metrics table has none); `runner report` printed two rows per (lock, vms) without it."""
    import hashlib

    from runner.records.store import AttemptRecord, CampaignStore
    from runner.records.metric import Metric

    axis_types = {"lock": "str", "vms": "int"}  # guest_kernel: reserved, not an axis column (runner.trials.axis_types)
    store = CampaignStore(tmp_path / "ds" / "oc")
    with store:
        store.initialise(campaign="oc", workload="lockbench", matrix_text="campaign: oc\n", matrix_sha256="0" * 64,
                         axis_types=axis_types, trial_count=24, seed=0, provenance={})
        for lock in ("ttas", "ticket"):
            for vms in (1, 2):
                for kernel, speed in (("default", 1.0), ("nopvspin", 0.5)):
                    cell = hashlib.sha256(f"{lock}{vms}{kernel}".encode()).hexdigest()[:16]
                    for rep in (1, 2, 3):
                        per_vm = [1e5 * speed / vms * (1 + 0.01 * rep)] * vms
                        mets = [Metric("throughput", v, "ops/s", True, vm=i) for i, v in enumerate(per_vm)]
                        mets.append(Metric("throughput", sum(per_vm), "ops/s", True))  # the total, as guests.combine adds it
                        mets.append(Metric("aggregate_throughput", sum(per_vm), "ops/s", True))
                        store.write_attempt("oc", "lockbench", axis_types, AttemptRecord(
                            trial_id=f"{cell}{rep}", cell_id=cell, repetition=rep, attempt=1, host="h", status="ok", error=None,
                            started_at=1.7e9, ended_at=1.7e9 + 1, wall_s=1.0, workload_wall_s=1.0, env="kvm", accel="kvm",
                            params={"lock": lock, "vms": vms, "guest_kernel": kernel, "env": "kvm", "threads": 2},
                            guest={"guest_kernel": kernel}, metrics=tuple(mets)))
    out = tmp_path / "rep"
    assert main(["report", "oc", "--datasets", str(tmp_path / "ds"), "--out", str(out), "--bootstrap", "0",
                 "--metric", "aggregate_throughput"]) == 0
    printed = capsys.readouterr().out
    assert "oc: median of aggregate_throughput in every cell" in " ".join(printed.split())
    header = next(line for line in printed.splitlines() if "lock" in line and "median" in line)
    assert re.findall(r"\w+", header) == ["lock", "vms", "guest_kernel", "n", "median", "rel_iqr", "reps_needed"]
    body = [line for line in printed.splitlines() if "ttas" in line or "ticket" in line]
    assert len(body) == 8 and sum("nopvspin" in line for line in body) == 4 and all(len(line) <= 80 for line in body)
    rows = _csv(out / "summary.csv")
    assert len({(r["lock"], r["vms"], r["guest_kernel"], r["metric"]) for r in rows}) == len(rows) == 16
    assert {r["guest_kernel"] for r in rows} == {"default", "nopvspin"}
    doc = (out / "report.html").read_text()
    over = doc[doc.index("<h2>Over-commit</h2>"):]
    over = over[:over.index("<h2>", 5)]
    assert over.count("<img ") == 1  # throughput per VM; not a figure of aggregate_throughput with one point at k = 1
    assert "lock=ticket guest_kernel=nopvspin accel=kvm" in over
