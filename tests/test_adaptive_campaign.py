"""Real campaigns on this machine (local Dask cluster, Parquet) with probes and with repetitions until the
interval is tight: a steady cell stops at `min`, a noisy one gets rounds until `max`; a relaunch that finds
the last round missing runs it again with the same trial ids; the report says which cell met the target."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runner.cli import main
from runner.records.store import read_campaign

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
# `noise` 0: always 1000; `noise` 1000: 1000 and 2000 in turn (a count per cell in the host's work directory),
# far wider than +-5% at any number of repetitions. Random values could, by chance, agree within 5 % in the first
# three repetitions (a few percent of runs), and the cell would stop there.
NOISY = ('f=".noise-$RUNNER_NOISE"; n=$(cat "$f" 2>/dev/null || echo 0); echo $((n + 1)) > "$f"; '
         'echo "{\\"v\\": $((1000 + n % 2 * RUNNER_NOISE))}"')


def adaptive_matrix(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        f"workload: {{name: command, params: {{run: '{NOISY}', estimate: 0.1}}}}\n"
        "axes:\n  noise: [0, 1000]\n"
        "repetitions: {min: 3, max: 8, ci: 0.05}\ntimeout: 120\n"
    )
    return path


def test_adaptive_campaign_rounds_resume_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = adaptive_matrix(tmp_path, "adaptive")
    ds = tmp_path / "ds"
    assert main(["launch", str(matrix), "--datasets", str(ds)]) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "round 2: 1 cell(s) wider than +-5% on v: 3 more trial(s)" in out
    assert "round 3: 1 cell(s) wider than +-5% on v: 2 more trial(s)" in out
    assert "1 cell(s) met +-5% on v, 1 stopped at max 8" in out
    assert "11 trials planned" in out and "11 ok now" in out

    _, trials, prov = read_campaign("adaptive", ds)
    reps = trials.groupby("noise")["repetition"].agg(["count", "max"])
    assert reps.loc[0].tolist() == [3, 3] and reps.loc[1000].tolist() == [8, 8]
    assert prov["repetitions"] == {"min": 3, "max": 8, "ci": 0.05, "metric": None}
    noisy = trials[trials["noise"] == 1000].set_index("repetition")["trial_id"].to_dict()

    # Lose the last round (as if the controller died in it): a relaunch runs it again, with the same ids.
    root = ds / "adaptive"
    for rep in (7, 8):
        for table in ("trials", "metrics"):
            for f in (root / table).glob(f"workload=command/{noisy[rep]}.*"):
                f.unlink()
    assert main(["launch", str(matrix), "--datasets", str(ds)]) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "9 already recorded" in out and "2 ok now" in out
    # the round count goes on from the data (rounds 1 and 2 are recorded), it does not restart at 1
    assert "round 3: 1 cell(s) wider than +-5% on v: 2 more trial(s)" in out and "repetitions after 3 round(s)" in out
    _, again, _ = read_campaign("adaptive", ds)
    assert again[again["noise"] == 1000].set_index("repetition")["trial_id"].to_dict() == noisy

    # A third launch has nothing left to do.
    assert main(["launch", str(matrix), "--datasets", str(ds)]) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "11 already recorded, 0 ok now" in out and "repetitions after 3 round(s)" in out

    assert main(["report", "adaptive", "--datasets", str(ds), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Repetitions</h2>" in html and "met target" in html and "stopped at max" in html


def test_probes_in_a_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str], campaigns: list[str]) -> None:
    campaigns.append("probed")
    path = tmp_path / "probed.yml"
    path.write_text(
        "campaign: probed\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: lockbench, params: {duration: 0.5, lock: ticket}}\n"
        "axes:\n  threads: [1, 2]\n"
        "repetitions: 2\ntimeout: 120\n"
        "probes: [perf_stat, lock_stat, kvm_exits, schedstat, cpufreq]\n"
    )
    assert main(["launch", str(path), "--datasets", str(tmp_path / "ds")]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    metrics, trials, prov = read_campaign("probed", tmp_path / "ds")
    assert len(trials) == 4 and set(trials["status"]) == {"ok"}  # probes never fail a trial
    assert prov["probes"] == ["perf_stat", "lock_stat", "kvm_exits", "schedstat", "cpufreq"]
    probed = metrics[metrics["probe"].notna()]
    assert set(probed["side"]) == {"host"}
    assert {"schedstat", "cpufreq"} <= set(probed["probe"])
    if shutil.which("perf"):
        assert "perf_stat.context_switches" in set(probed["metric"])
    # every trial has its own result and the probes' rows; the workload's rows have no probe
    own = metrics[metrics["probe"].isna()]
    assert (own.groupby("trial_id")["metric"].apply(lambda m: "throughput" in set(m))).all()
    assert probed.groupby("trial_id")["metric"].apply(lambda m: "schedstat.run_delay_s" in set(m)).sum() >= 3
    delay = probed[(probed["metric"] == "schedstat.threads")].set_index("trial_id")["value"]
    assert (delay >= 1).sum() >= 3  # the workload's threads were found (a trial shorter than a sample may miss them)
    # an unavailable probe is reported once for the campaign, not once per trial
    for name in ("lock_stat", "kvm_exits"):
        if name not in set(probed["probe"]):
            assert " ".join(out.split()).count(f"probe {name} not available on localhost") == 1
