"""Holds after a crash: a relaunch takes over its own campaign's holds when the process that took them is gone,
a host dropped mid-campaign is released at once, and `runner status` does not call a dead controller running.
Hold files live in tmp_path, reached through LocalHost (the same script runs on every host)."""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner.cli.status import is_running
from runner.errors import HostError
from runner.execution.campaign import Progress, _Dispatch
from runner.hosts import process
from runner.hosts.local import LocalHost
from runner.hosts.process import ProcessId, is_gone, stat_start
from runner.lab.reservations import HoldInfo, HostBusy, acquire, hold_hosts, is_own_stale, parse_hold, status
from runner.records.store import AttemptRecord, CampaignStore, lock_text, parse_lock
from runner.trials import Trial
from tests.events import wait_for

HERE = socket.gethostname()


def dead_pid() -> int:
    """The PID of a process that has ended (and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def write_hold(path: Path, *, owner: str = "me@ctl", campaign: str = "nightly", pid: int | None = None,
               start: int | None = None, boot: str | None = None, controller: str | None = HERE, ttl: int = 60) -> dict:
    doc = {"version": 2, "owner": owner, "campaign": campaign, "since": "2026-01-01T00:00:00+00:00", "ttl": ttl,
           "token": "0123456789abcdef", "pid": pid, "pid_start": start, "boot_id": boot, "controller": controller}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, sort_keys=True) + "\n")
    return doc


# ----- process identity (pure) ----------------------------------------------------------------------------
def test_stat_start_counts_fields_after_the_command_name() -> None:
    fields = " ".join(str(i) for i in range(3, 53)).replace("3 ", "S ", 1)
    assert stat_start(f"42 (a b) c)) {fields}") == 22  # field 22, even with spaces and ')' in the name
    assert stat_start(Path(f"/proc/{os.getpid()}/stat").read_text()) == process.current().start
    with pytest.raises(ValueError):
        stat_start("42 (x) S 1 2")


def test_is_gone() -> None:
    rec = ProcessId(10, 500, "boot-a")
    assert not is_gone(rec, ProcessId(10, 500, "boot-a"), "boot-a")
    assert is_gone(rec, None, "boot-a")  # no such PID
    assert is_gone(rec, ProcessId(10, 501, "boot-a"), "boot-a")  # the PID was reused
    assert is_gone(rec, ProcessId(10, 500, "boot-b"), "boot-b")  # another boot
    assert not is_gone(ProcessId(10), ProcessId(10, 7, "boot-a"), "boot-a")  # nothing recorded to compare: alive
    assert process.gone(ProcessId(dead_pid()))
    assert not process.gone(process.current())
    assert process.gone(ProcessId(os.getpid(), process.current().start + 1, process.boot_id()))


def test_is_own_stale_needs_same_owner_campaign_controller_and_a_gone_process() -> None:
    info = HoldInfo("h", "/p", "me@ctl", "nightly", "s", 60, "ab", 1.0, pid=5, controller="ctl", pid_start=9, boot_id="b")
    gone, alive = (lambda p: True), (lambda p: False)
    assert is_own_stale(info, "me@ctl", "nightly", "ctl", gone)
    assert not is_own_stale(info, "me@ctl", "nightly", "ctl", alive)
    assert not is_own_stale(info, "me@ctl", "other", "ctl", gone)
    assert not is_own_stale(info, "you@ctl", "nightly", "ctl", gone)
    assert not is_own_stale(info, "me@ctl", "nightly", "elsewhere", gone)
    legacy = HoldInfo("h", "/p", "me@ctl", "nightly", "s", 60, "ab", 1.0)  # version 1: no pid, no controller
    assert not is_own_stale(legacy, "me@ctl", "nightly", "ctl", gone)


def test_parse_hold_reads_the_holder_identity() -> None:
    doc = {"owner": "a@c", "campaign": "x", "since": "s", "ttl": 60, "token": "ab", "pid": 7, "pid_start": 99,
           "boot_id": "b1", "controller": "c"}
    info = parse_hold("h", "/p", json.dumps(doc), 1.0)
    assert info.holder == ProcessId(7, 99, "b1") and info.controller == "c"
    doc.update(pid="7", pid_start=[1], controller=3)  # wrong types are left out, not trusted
    info = parse_hold("h", "/p", json.dumps(doc), 1.0)
    assert info.owner == "a@c" and info.holder is None and info.controller is None


# ----- takeover on a real hold file ------------------------------------------------------------------------
def test_relaunch_takes_over_its_own_hold_when_the_holder_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "holds" / "hold.json"
    write_hold(path, pid=dead_pid(), start=1, boot=process.boot_id())
    host = LocalHost("h")
    hold = acquire(host, "me@ctl", "nightly", 60, path=str(path))  # one try, no waiting: taken over or HostBusy
    assert hold.took_over is not None and hold.took_over.token == "0123456789abcdef"
    now = status(host, path=str(path))
    assert now.token == hold.token and now.holder == process.current() and now.controller == HERE
    hold.release()
    assert status(host, path=str(path)) is None


def test_hold_of_a_pid_reused_by_another_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "hold.json"
    me = process.current()
    write_hold(path, pid=me.pid, start=me.start + 1, boot=me.boot)  # our PID, another start time
    hold = acquire(LocalHost("h"), "me@ctl", "nightly", 60, path=str(path))
    assert hold.took_over is not None
    hold.release()


@pytest.mark.parametrize("change", [
    {"alive": True},  # the holder still runs (this very process)
    {"campaign": "other"},  # another campaign of ours: left to expire
    {"owner": "you@ctl"},  # another user's
    {"controller": "another-machine"},  # a PID there cannot be checked from here
    {"controller": None},  # a version-1 hold
])
def test_holds_that_are_not_taken_over(change: dict, tmp_path: Path) -> None:
    path = tmp_path / "hold.json"
    me = process.current()
    pid, start = (me.pid, me.start) if change.pop("alive", False) else (dead_pid(), 1)
    write_hold(path, pid=pid, start=start, boot=me.boot, **change)
    with pytest.raises(HostBusy, match="for campaign"):
        acquire(LocalHost("h"), "me@ctl", "nightly", 60, path=str(path))
    assert status(LocalHost("h"), path=str(path)).token == "0123456789abcdef"  # untouched


def test_hold_hosts_takes_over_at_once_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "hold.json"
    old = dead_pid()
    write_hold(path, pid=old, start=1)
    notes: list[str] = []
    with hold_hosts([LocalHost("h")], "me@ctl", "nightly", timeout=60, paths={"h": str(path)}, on_wait=notes.append) as hs:
        assert set(hs.held) == {"h"}
    # At once: on the first try, with no "waiting for host h" note (the old hold's TTL is 60 s, its mtime now).
    assert notes == [f"host h: took over the hold of campaign nightly from process {old} on {HERE}, which is gone"]
    assert status(LocalHost("h"), path=str(path)) is None


# ----- a host dropped mid-campaign ------------------------------------------------------------------------
class FlakyHost(LocalHost):
    """LocalHost whose `run` fails (HostError) while `down` is set: a host that went away and came back.
    `refused` counts the calls it failed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = threading.Event()
        self.refused = 0

    def run(self, argv, **kwargs):  # type: ignore[override]
        if self.down.is_set():
            self.refused += 1
            raise HostError(f"host {self.name}: cannot connect")
        return super().run(argv, **kwargs)


class StuckHost(LocalHost):
    """LocalHost whose `run` blocks while `stuck` is set, until `free` is set (bounded): a host slow to answer.
    `entered` is set when a call is blocked."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.stuck, self.entered, self.free = threading.Event(), threading.Event(), threading.Event()

    def run(self, argv, **kwargs):  # type: ignore[override]
        if self.stuck.is_set():
            self.entered.set()
            self.free.wait(120)
        return super().run(argv, **kwargs)


def test_dropped_host_is_released_at_once(tmp_path: Path) -> None:
    paths = {n: str(tmp_path / f"{n}.json") for n in ("a", "b")}
    slow = StuckHost("a")
    with hold_hosts([slow, LocalHost("b")], "me@ctl", "c", ttl=60, paths=paths) as hs:
        slow.stuck.set()
        hs.drop("a")  # returns at once although host a does not answer: the release runs in the background
        assert slow.entered.wait(60) and "a" in hs.dropped and "a" not in hs.held
        assert status(LocalHost("a"), path=paths["a"]).owner == "me@ctl"  # not released yet: still waiting on a
        slow.stuck.clear()
        slow.free.set()
        assert wait_for(lambda: status(LocalHost("a"), path=paths["a"]) is None)
        assert wait_for(lambda: not hs.dropped)  # the release thread forgets the host just after removing its file
        assert set(hs.held) == {"b"}
        hs.drop("a")  # twice, or an unknown host: nothing
        hs.drop("zz")
        assert status(LocalHost("b"), path=paths["b"]).owner == "me@ctl"
    assert status(LocalHost("b"), path=paths["b"]) is None


def test_dropped_host_that_is_away_is_released_when_it_answers(tmp_path: Path) -> None:
    host = FlakyHost("a")
    path = str(tmp_path / "a.json")
    with hold_hosts([host], "me@ctl", "c", ttl=1, paths={"a": path}) as hs:  # a beat every 0.25 s
        host.down.set()
        hs.drop("a")
        assert wait_for(lambda: host.refused >= 2)  # tried at the drop and again at a later beat, not reached
        assert "a" in hs.dropped  # kept, not heartbeaten
        assert status(LocalHost("a"), path=path).owner == "me@ctl"
        host.down.clear()
        assert wait_for(lambda: status(LocalHost("a"), path=path) is None)
        assert wait_for(lambda: not hs.dropped)


def test_dispatch_drops_a_host_that_fails_as_host() -> None:
    matrix = SimpleNamespace(campaign="c", workload="command", placement="pool",
                             retry=SimpleNamespace(attempts=2, on=frozenset({"host"})))
    store = SimpleNamespace(write_attempt=lambda *a: None)
    dropped: list[str] = []
    live = [SimpleNamespace(name="h1"), SimpleNamespace(name="h2")]
    d = _Dispatch(matrix, store, {}, live, {}, Progress(total=1), None, dropped.append)
    trial = Trial(campaign="c", workload="command", trial_id="t1", cell_id="cell", repetition=1, params=(("n", 1),), written=(("n", 1),))
    now = time.time()
    rec = AttemptRecord(trial_id="t1", cell_id="cell", repetition=1, attempt=1, host="h1", status="failed",
                        error="h1: connection lost", started_at=now, ended_at=now, wall_s=0.0, workload_wall_s=None,
                        params={"n": 1}, env="host", accel=None, failure_kind="host")
    queues: dict = {None: collections.deque()}
    d._handle(rec, trial, 1, "h1", queues)
    assert dropped == ["h1"] and d.dead == {"h1"}
    assert list(queues[None]) == [(trial, 2)]  # pool: retried on another host


# ----- runner status --------------------------------------------------------------------------------------
def test_lock_text_round_trip_and_is_running() -> None:
    me = process.current()
    since = datetime(2026, 1, 1, tzinfo=UTC)
    holder = parse_lock(lock_text(me, HERE, since))
    assert holder.line == f"pid {me.pid} on {HERE} since 2026-01-01T00:00:00+00:00" and holder.process == me
    assert is_running(holder, HERE, process.gone)
    gone = parse_lock(lock_text(ProcessId(dead_pid(), 1, me.boot), HERE, since))
    assert not is_running(gone, HERE, process.gone)
    assert is_running(gone, "another-machine", process.gone)  # cannot be checked from here
    old = parse_lock(f"pid {dead_pid()} on {HERE} since 2026-01-01T00:00:00+00:00\n")  # before start times were kept
    assert old.process.start is None and not is_running(old, HERE, process.gone)
    assert parse_lock("") is None and parse_lock("garbage\n") is None


def test_status_lock_after_a_killed_controller(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "camp")
    store.acquire()
    try:
        assert is_running(store.lock_holder(), HERE, process.gone)
    finally:
        store.release()
    assert store.lock_holder() is None  # released: nobody
    # What a SIGKILLed controller leaves: its line, for a process that is gone.
    (store.root / "lock").write_text(lock_text(ProcessId(dead_pid(), 1, process.boot_id()), HERE, datetime.now(UTC)))
    assert not is_running(store.lock_holder(), HERE, process.gone)
