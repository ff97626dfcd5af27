"""A real campaign on this machine with a canary: the canary runs where the plan says, with the host's state,
a relaunch runs again only the canary run it lost (same id) and adds none that is recorded, and the report
plots the canary over time."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.cli import main
from runner.cli.status import campaign_status
from runner.records.store import read_campaign

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]


def test_canary_campaign_resume_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str], campaigns: list[str]) -> None:
    campaigns.append("canaried")
    matrix = tmp_path / "canaried.yml"
    matrix.write_text(
        "campaign: canaried\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: lockbench, params: {duration: 0.1, lock: ttas}}\n"
        "axes:\n  threads: [1, 2]\n"
        "repetitions: 2\norder: as-written\ntimeout: 60\n"
        "canary: {cell: {threads: 2}, every: 2}\n"
    )
    assert main(["plan", str(matrix)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("canary threads=2: before the first trial, after every 2 trials and after the last trial on each host: "
            "3 more trials") in out
    assert "canary 1" in out and "canary 2" in out and "canary 3" in out  # the closing run after the last trial

    ds = tmp_path / "ds"
    assert main(["launch", str(matrix), "--datasets", str(ds)]) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "7 trials planned" in out and "7 ok now" in out, out

    metrics, trials, prov = read_campaign("canaried", ds)
    assert prov["canary"] == {"cell": {"threads": 2}, "every": 2, "metric": None, "minutes": None}
    order = trials.sort_values("started_at")
    assert ["C" if r == "canary" else "t" for r in order["role"].fillna("")] == list("CttCttC")  # the closing run after the last trial
    canaries = order[order["role"] == "canary"]
    assert list(canaries["repetition"]) == [1, 2, 3] and canaries["cell_id"].nunique() == 1
    assert canaries["cell_id"].iloc[0] in set(order.loc[order["threads"] == 2, "cell_id"])
    state = metrics[metrics["probe"] == "host_state"]
    assert set(state["trial_id"]) == set(canaries["trial_id"])  # every canary run read the host's state, and only they
    assert {"host_state.busy", "host_state.load1"} <= set(state["metric"])

    # Lose the last trial and the closing canary run (as if the controller died there): the relaunch runs the
    # trial again, then the closing run with its id; it adds no other canary run.
    root = ds / "canaried"
    lost = [order.loc[order["role"] != "canary", "trial_id"].iloc[-1], canaries["trial_id"].iloc[-1]]
    for tid in lost:
        for table in ("trials", "metrics"):
            for f in (root / table).glob(f"workload=lockbench/{tid}.*"):
                f.unlink()
    assert main(["launch", str(matrix), "--datasets", str(ds)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "7 trials planned, 5 already recorded, 2 ok now" in out, out
    _, again, _ = read_campaign("canaried", ds)
    assert sorted(again["trial_id"]) == sorted(trials["trial_id"])
    st = campaign_status("canaried", ds)  # canary runs are beside the plan: neither done nor pending trials
    assert (st.planned, st.ok, st.pending, st.failed) == (4, 4, 0, {}), st
    assert main(["launch", str(matrix), "--datasets", str(ds)]) == 0
    assert "7 trials planned, 7 already recorded, 0 ok now" in " ".join(capsys.readouterr().out.split())
    _, final, _ = read_campaign("canaried", ds)
    assert len(final) == 7

    assert main(["report", "canaried", "--datasets", str(ds), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Drift and host state</h2>" in html and 'src="img/canary.png"' in html
    assert (tmp_path / "report" / "img" / "canary.png").stat().st_size > 1000
    assert "Host state, batch by batch" in html and "And 3 canary runs" in html
