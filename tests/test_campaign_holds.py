"""Holds are checked where they matter: before every trial on a host, the campaign confirms its hold there
is still its own. A hold released by force mid-campaign (`runner hosts release --force`, someone else) stops
new trials on that host at once, is said in the summary and recorded in provenance. The host is this
machine (LocalHost) with its hold file in tmp_path (inventory variable runner_hold_path); the test waits on
marker files the workload writes, never on a clock."""

from __future__ import annotations

import json
import pickle
import threading
import time
import uuid
from pathlib import Path

import pytest

from runner.cli import hosts as hosts_cli
from runner.cli import main
from runner.hosts.local import LocalHost
from runner.lab.reservations import HoldLost, acquire, force_release, hold_hosts, status
from runner.records.store import read_campaign
from tests.events import wait_for

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


def test_guard_runs_a_command_only_while_the_hold_is_ours(tmp_path: Path) -> None:
    """The trial's first command carries the hold check (HoldGuard): nothing runs once the hold is gone, and
    the reason names what the host has now; after one confirmed command the rest go to the host as they are."""
    path = str(tmp_path / "a.json")
    marker = tmp_path / "ran"
    hold = acquire(LocalHost("a"), "me@ctl", "c", 60, path=path)
    guard = hold.guard()
    assert pickle.loads(pickle.dumps(guard)) == guard  # plain data: it travels to a Dask worker
    host = guard.wrap(LocalHost("a"))
    first = host.run(["sh", "-c", 'echo "$1" > "$2"; echo out; exit 3', "sh", "x y", str(marker)], timeout=10)
    assert (first.rc, first.stdout, marker.read_text()) == (3, "out\n", "x y\n")  # argv, rc and output as they are
    assert first.argv[0] == "sh" and guard.path not in first.argv  # the record shows the command, not the guard
    force_release(LocalHost("a"), path=path)
    assert host.run(["true"], timeout=10).ok  # confirmed already: later commands of this trial are not checked
    assert guard.check(LocalHost("a")) == "host a: our hold for campaign c was lost; now released (by force?)"

    marker.unlink()
    later = guard.wrap(LocalHost("a"))  # the next trial on the host
    with pytest.raises(HoldLost, match="our hold for campaign c was lost; now released"):
        later.run(["touch", str(marker)], timeout=10)
    assert not marker.exists()
    with pytest.raises(HoldLost):  # and nothing else of that trial either
        later.put(Path(__file__), str(tmp_path / "copy"))
    other = acquire(LocalHost("a"), "bob@ctl2", "theirs", 60, path=path)
    try:
        why = guard.wrap(LocalHost("a")).run(["touch", str(marker)], timeout=10)
    except HoldLost as exc:
        why = str(exc)
    assert "held by bob@ctl2 for campaign theirs" in why and not marker.exists()
    other.release()


def test_worker_records_a_lost_hold_without_running_the_trial(tmp_path: Path) -> None:
    """A trial sent with a hold that is gone returns a record of kind `hold` (the controller does not count it
    as an attempt) and runs nothing, not even its host's preparation."""
    from runner.execution.worker import AttemptSpec, execute
    from runner.matrix.load import load_matrix
    from runner.provision.inventory import HostSpec
    from runner.trials import plan

    inventory, hold_file = local_inventory(tmp_path)
    marks = tmp_path / "marks"
    marks.mkdir()
    matrix = load_matrix(gated_matrix(tmp_path, inventory, marks, xs=1, run='touch "$RUNNER_MARKS/started"; echo "{\\"n\\": 1}"'))
    spec = HostSpec(name="localhost", address="127.0.0.1", local=True)
    trial = plan(matrix, {"localhost": 2})[0]
    workdir = tmp_path / "work"
    hold = acquire(LocalHost("localhost"), "me@ctl", matrix.campaign, 60, path=str(hold_file))
    ok = execute(AttemptSpec(trial, 1, spec, 30, str(workdir / "a"), hold=hold.guard()))
    assert ok.status == "ok" and (marks / "started").exists(), ok.error
    (marks / "started").unlink()
    force_release(LocalHost("localhost"), path=str(hold_file))
    lost = execute(AttemptSpec(trial, 1, spec, 30, str(workdir / "b"), hold=hold.guard()))
    assert (lost.status, lost.failure_kind) == ("failed", "hold")
    assert "our hold for campaign" in lost.error and "was lost" in lost.error
    assert not (marks / "started").exists() and not (workdir / "b").exists()


def test_trial_guard_of_a_hold_lost_before_any_trial_still_stops_it(tmp_path: Path) -> None:
    """A hold the heartbeat (or a check) found lost is no longer `held`, but trials sent to that host still carry
    its guard, so they find it lost on the host instead of running unguarded."""
    path = str(tmp_path / "a.json")
    with hold_hosts([LocalHost("a")], "me@ctl", "c", ttl=60, paths={"a": path}) as hs:
        assert hs.trial_guard("unknown") is None
        force_release(LocalHost("a"), path=path)
        assert hs.confirm("a") is not None and "a" not in hs.held
        guard = hs.trial_guard("a")
        assert guard is not None and guard.check(LocalHost("a")) == hs.lost["a"]
