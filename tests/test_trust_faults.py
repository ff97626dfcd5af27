"""Signals and the machine's own faults (issue 20): `runner serve` given SIGTERM mid-campaign exits with the
campaign's measured trials kept; Ctrl-C during start-up is one line; a workload killed for memory says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from runner.lab import schedule as sch
from runner.records.store import read_campaign
from tests.events import wait_for

PROJECT = Path(__file__).resolve().parents[1]
RUNNER = [sys.executable, "-m", "runner.cli"]
ENV = {**os.environ, "PYTHONPATH": str(PROJECT), "COLUMNS": "1000"}  # this checkout's runner, whatever is installed


def test_serve_exits_on_sigterm_mid_campaign_and_keeps_what_was_measured(tmp_path: Path) -> None:
    home, ds, marks = tmp_path / "home", tmp_path / "ds", tmp_path / "marks"
    marks.mkdir()
    matrix = tmp_path / "slow.yml"
    matrix.write_text(  # every trial after the first waits for a gate the test never opens: the campaign runs on
        "campaign: slow\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: command, params: {run: 'if [ $RUNNER_N -gt 1 ]; then while [ ! -e " + str(marks) +
        "/go ]; do sleep 0.1; done; fi; echo {\\\"v\\\": $RUNNER_N}'}}\n"
        "axes: {n: [1, 2, 3]}\nrepetitions: 1\ntimeout: 600\n")
    now = datetime.now().astimezone()
    sch.add_schedule("slow", matrix, "* * * * *", datasets=ds, use_systemd=False, home=home, now=now - timedelta(minutes=5))
    proc = subprocess.Popen([*RUNNER, "serve"], env={**ENV, "RUNNER_HOME": str(home)}, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: list(ds.glob("slow-*/trials/workload=*/*.ok.parquet")), timeout=900)
        proc.send_signal(signal.SIGTERM)  # to serve alone, as systemd's stop does first
        _, err = proc.communicate(timeout=900)  # a bound against a hang: serve used to go on serving
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "runner: interrupted", err
    (dataset,) = ds.glob("slow-*")
    _, trials, _ = read_campaign(dataset)
    ok = trials[trials["status"] == "ok"]
    assert len(ok) >= 1 and ok["trial_id"].is_unique and set(ok["n"]) == {1}
    assert sch.last_run("slow", home) is None  # the slot was interrupted: it runs again (resumes) next time
