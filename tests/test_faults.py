"""Faults a campaign over many hosts must survive without losing or duplicating a result.

Every test makes its own test bed (`make_testbed`) and breaks it: a host unreachable at the start, a host
dying in the middle of a trial (sshd killed, link taken down), the controller killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.records.store import read_campaign
from runner.testing.testbed import TestBed
from tests.events import wait_for
from tests.test_remote_campaign import WORK_BASE, bed_matrix, run_campaign

pytestmark = [pytest.mark.integration, pytest.mark.netns]

RUNNER = [sys.executable, "-m", "runner.cli"]
# A trial that marks its start in its work directory (so a test can break the host under it), waits while its
# host's hold file `<workdir>.hold` exists (so the break lands inside the trial however busy the machine is),
# then sleeps.
SLEEPER = (
    'touch "$RUNNER_WORKDIR/started.$RUNNER_X"; i=0; '
    'while [ -e "$RUNNER_WORKDIR.hold" ] && [ "$i" -lt 600 ]; do sleep 0.05; i=$((i+1)); done; '
    'sleep "$RUNNER_SLEEP"; echo "{\\"n\\": 1}"'
)


def when_started(campaign_name: str, host: str, action: Callable[[], None]) -> threading.Thread:
    """Run `action` while a trial on `host` runs (in a thread; join it afterwards): the host's hold file, made
    here before the campaign starts, keeps the trial waiting from its start marker until the action is done."""
    hold = WORK_BASE / campaign_name / f"{host}.hold"
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.touch()

    def watch() -> None:
        try:
            if wait_for(lambda: list((WORK_BASE / campaign_name / host).glob("started.*")), 600):
                action()  # the trial is waiting on the hold file: inside it, whatever the load
        finally:
            hold.unlink(missing_ok=True)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_host_unreachable_at_start(make_testbed: Callable[[int], TestBed], tmp_path: Path, campaigns: list[str]) -> None:
    bed = make_testbed(2)
    bed.kill_sshd("tb2")
    # placement each: tb2's trials are recorded as failed with the reason; tb1's all complete.
    each = bed_matrix(tmp_path, bed, placement="each")
    summary = run_campaign(each, tmp_path / "ds", campaigns)
    assert not summary.success and summary.dead_hosts == ("tb2",)
    assert (summary.ok, summary.failed) == (2, 2)
    _, trials, prov = read_campaign(summary.dataset)
    by_host = {h: g for h, g in trials.groupby("host")}
    assert set(by_host["tb1"]["status"]) == {"ok"}
    assert set(by_host["tb2"]["status"]) == {"failed"} and len(by_host["tb2"]) == 2
    assert all(e.startswith("tb2: not run: host tb2 (root@") and "cannot connect" in e for e in by_host["tb2"]["error"])
    assert "tb2" in prov["dead_hosts"]

    # placement pool: the live host does all the work; the dead one is reported, nothing fails.
    pool = bed_matrix(tmp_path, bed, axes="  x: [1, 2, 3]\n")
    messages: list[str] = []
    summary = run_campaign(pool, tmp_path / "ds", campaigns, on_progress=lambda p: messages.extend(p.messages[len(messages):]))
    assert summary.success and summary.ok == 3 and summary.dead_hosts == ("tb2",)
    _, trials, _ = read_campaign(summary.dataset)
    assert set(trials["host"]) == {"tb1"} and set(trials["status"]) == {"ok"}
    assert any(m.startswith("host tb2 unreachable at start: host tb2 (root@") for m in messages)


def test_sshd_killed_mid_trial_is_retried_on_another_host(
    make_testbed: Callable[[int], TestBed], tmp_path: Path, campaigns: list[str]
) -> None:
    bed = make_testbed(2)
    matrix = bed_matrix(tmp_path, bed, run=SLEEPER, axes="  x: [1, 2, 3, 4]\n  sleep: [1.5]\n", timeout=10)
    killer = when_started(matrix.campaign, "tb2", lambda: bed.kill_sshd("tb2"))
    summary = run_campaign(matrix, tmp_path / "ds", campaigns)
    killer.join()
    assert summary.success, summary.failures  # every trial ended ok, the broken one on tb1
    assert summary.ok == 4 and summary.attempts == 5 and summary.dead_hosts == ("tb2",)
    _, trials, prov = read_campaign(summary.dataset)
    failed = trials[trials["status"] == "failed"]
    assert len(failed) == 1 and failed["host"].iloc[0] == "tb2" and failed["attempt"].iloc[0] == 1
    assert failed["error"].iloc[0].startswith("host tb2 (root@") and "connection lost" in failed["error"].iloc[0]
    retried = trials[(trials["trial_id"] == failed["trial_id"].iloc[0]) & (trials["status"] == "ok")]
    assert list(retried["host"]) == ["tb1"] and list(retried["attempt"]) == [2]
    assert (trials[trials["status"] == "ok"]["trial_id"]).is_unique
    assert "tb2" in prov["dead_hosts"] and "connection lost" in prov["dead_hosts"]["tb2"]
    assert failed["wall_s"].iloc[0] < matrix.timeout  # noticed when the connection went, not at the trial's timeout


def test_link_down_mid_trial_fails_within_its_timeout(
    make_testbed: Callable[[int], TestBed], tmp_path: Path, campaigns: list[str]
) -> None:
    # placement each: the cut-off host's trial fails with a clear error once its timeout (plus the
    # remote `timeout`'s kill grace) has passed; its other trials are recorded as not run; tb1 completes.
    # (A 5 s timeout for a 0.5 s trial: tb1's trials end in time on a busy machine too.)
    bed = make_testbed(2)
    matrix = bed_matrix(tmp_path, bed, run=SLEEPER, axes="  x: [1, 2]\n  sleep: [0.5]\n", timeout=5, placement="each")
    cut = when_started(matrix.campaign, "tb2", lambda: bed.link_down("tb2"))
    summary = run_campaign(matrix, tmp_path / "ds", campaigns)
    cut.join()
    assert summary.dead_hosts == ("tb2",) and (summary.ok, summary.failed) == (2, 2)
    _, trials, _ = read_campaign(summary.dataset)
    tb2 = trials[trials["host"] == "tb2"].sort_values("started_at")
    assert set(trials[trials["host"] == "tb1"]["status"]) == {"ok"}
    assert list(tb2["status"]) == ["failed", "failed"]
    lost, unrun = tb2["error"].iloc[0], tb2["error"].iloc[1]
    # Ended by the deadline (timeout + kill_after + grace, named in the error), not before it, and the host's
    # next trial was recorded as not run without an attempt.
    assert lost.startswith("host tb2 (root@") and "no answer 15 s after starting env; host or network gone" in lost
    assert unrun.startswith("tb2: not run: host tb2 (root@")
    assert tb2["wall_s"].iloc[0] >= 5 + 5 + 5 and tb2["wall_s"].iloc[1] == 0


def test_controller_sigkill_then_relaunch(make_testbed: Callable[[int], TestBed], tmp_path: Path, campaigns: list[str]) -> None:
    bed = make_testbed(2)
    matrix = bed_matrix(tmp_path, bed, run=SLEEPER, axes="  x: [1, 2, 3, 4, 5, 6, 7, 8]\n  sleep: [0.3]\n", reps=2)
    campaigns.append(matrix.campaign)
    dataset = tmp_path / "ds" / matrix.campaign
    argv = [*RUNNER, "launch", str(matrix.path), "--datasets", str(tmp_path / "ds"), "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert wait_for(lambda: len(list(dataset.glob("trials/*/*.ok.parquet"))) >= 4, 600)
    os.killpg(proc.pid, signal.SIGKILL)  # the controller and its local Dask workers, mid-campaign
    proc.communicate()
    kept = {p.name: p.stat().st_mtime_ns for p in dataset.glob("trials/*/*.ok.parquet")}
    first = {name.split(".")[0] for name in kept}
    assert 4 <= len(first) < 16

    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)  # a bound against a hang, not a speed
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already recorded" in done.stdout
    metrics, trials, _ = read_campaign(dataset)
    ok = trials[trials["status"] == "ok"]
    assert len(ok) == 16 and ok["trial_id"].is_unique and len(trials) == 16  # nothing ran twice
    assert {name: (dataset / "trials" / "workload=command" / name).stat().st_mtime_ns for name in kept} == kept
    assert len(metrics) == 16 and metrics["trial_id"].is_unique
    assert not list(dataset.rglob(".*.tmp"))
