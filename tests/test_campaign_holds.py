"""Holds are checked where they matter: before every trial on a host, the campaign confirms its hold there
is still its own. A hold released by force mid-campaign (`runner hosts release --force`, someone else) stops
new trials on that host at once, is said in the summary and recorded in provenance. The host is this
machine (LocalHost) with its hold file in tmp_path (inventory variable runner_hold_path); the test waits on
marker files the workload writes, never on a clock."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from runner.cli import hosts as hosts_cli
from runner.cli import main
from runner.hosts.local import LocalHost
from runner.lab.reservations import acquire, force_release, hold_hosts, status
from runner.records.store import read_campaign

pytestmark = pytest.mark.integration

# Every trial writes a marker, then waits until the test says go (bounded, so nothing hangs).
GATED = 'touch "$RUNNER_MARKS/started.$RUNNER_X"; i=0; while [ ! -e "$RUNNER_MARKS/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; echo "{\\"n\\": 1}"'


def local_inventory(tmp: Path) -> tuple[Path, Path]:
    """An inventory with this machine as `localhost`, its hold file in `tmp` (not shared with other tests)."""
    hold = tmp / "holds" / "localhost.json"
    inv = tmp / "inventory" / "hosts.yml"
    inv.parent.mkdir(parents=True)
    inv.write_text(
        "all:\n  children:\n    local:\n      hosts:\n        localhost:\n"
        "          ansible_connection: local\n"
        '          ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        f"          runner_hold_path: {hold}\n"
    )
    return inv, hold


def gated_matrix(tmp: Path, inventory: Path, marks: Path, *, xs: int = 4, run: str = GATED) -> Path:
    name = f"h{uuid.uuid4().hex[:10]}"
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: local, inventory: {inventory}}}\n"
        f"workload:\n  name: command\n  params:\n    run: {json.dumps(run)}\n    marks: {marks}\n"
        f"axes:\n  x: {list(range(1, xs + 1))}\n"
        "repetitions: 1\ntimeout: 60\nretry: {attempts: 1, on: [failed]}\n"
    )
    return path


def wait_for(check, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_confirm_sees_a_forced_release_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "a.json")
    with hold_hosts([LocalHost("a")], "me@ctl", "c", ttl=60, paths={"a": path}) as hs:
        assert hs.confirm("a") is None and hs.confirm("unknown") is None
        force_release(LocalHost("a"), path=path)
        other = acquire(LocalHost("a"), "bob@ctl2", "theirs", 60, path=path)  # someone else takes the host
        why = hs.confirm("a")
        assert why is not None and "our hold for campaign c was lost" in why and "held by bob@ctl2" in why
        assert "a" not in hs.held and hs.lost["a"] == why and hs.confirm("a") == why  # asked once, kept
    assert status(LocalHost("a"), path=path).owner == "bob@ctl2"  # not ours: never released by us
    other.release()


def test_force_release_mid_campaign_stops_new_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory, hold = local_inventory(tmp_path)
    marks = tmp_path / "marks"
    marks.mkdir()
    matrix = gated_matrix(tmp_path, inventory, marks)
    released: list[float] = []

    def release_mid_campaign() -> None:
        if wait_for(lambda: any(marks.glob("started.*"))):  # the first trial runs: the campaign holds the host
            assert status(LocalHost("x"), path=str(hold)) is not None
            assert hosts_cli.release_host(inventory, "localhost") is not None  # runner hosts release --force
            released.append(time.time())
        (marks / "go").touch()

    helper = threading.Thread(target=release_mid_campaign, daemon=True)
    helper.start()
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds"), "--quiet"])
    helper.join()
    out, err = capsys.readouterr()
    assert released, "the first trial was never seen running"
    assert rc == 1, out + err  # the trials not run count as failed: a relaunch runs them

    started = sorted(p.name for p in marks.glob("started.*"))
    assert len(started) == 1, started  # no trial started on the host after the release
    _, trials, prov = read_campaign(tmp_path / "ds" / matrix.stem)
    ok = trials[trials["status"] == "ok"]
    assert len(ok) == 1 and ok["started_at"].iloc[0].timestamp() < released[0]
    not_run = trials[trials["status"] != "ok"]
    assert len(not_run) == 3 and not_run["error"].str.contains("not run").all()
    assert not_run["error"].str.contains("holds lost: localhost").all()
    assert "localhost" in prov["lost_holds"] and "was lost" in prov["lost_holds"]["localhost"]
    assert "our hold for campaign" in err and "no new trial starts there" in err  # said at once
    assert "was lost" in out and "no trial started there after that" in out  # and in the summary
    assert status(LocalHost("x"), path=str(hold)) is None  # the campaign did not put a hold back or remove one
