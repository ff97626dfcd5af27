"""Host holds: the on-host protocol on this machine, then two real controllers (processes) racing for the
test bed's sshd hosts, and a controller SIGKILLed while it holds a host."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli import hosts as hosts_cli
from runner.hosts.local import LocalHost
from runner.lab import reservations
from runner.lab.reservations import HoldLost, HostBusy, acquire, force_release, hold_hosts, parse_hold, status
from runner.provision.inventory import connect, load_inventory
from tests.events import wait_for

PROJECT = Path(__file__).resolve().parents[1]


def test_parse_hold() -> None:
    assert parse_hold("h", "/p", "  \n", 0) is None
    doc = {"owner": "a@c", "campaign": "x", "since": "2026-01-01T00:00:00+00:00", "ttl": 60, "token": "ab", "pid": 7}
    info = parse_hold("h", "/p", json.dumps(doc), 61.0)
    assert info is not None and info.owner == "a@c" and info.expired and "expired 1 s ago" in info.describe()
    garbage = parse_hold("h", "/p", "{not json", 1.0)
    assert garbage is not None and garbage.owner == "unknown" and not garbage.expired


def test_hold_protocol_on_this_machine(tmp_path: Path) -> None:
    host = LocalHost("here")
    path = str(tmp_path / "holds" / "hold.json")
    a = acquire(host, "alice@c1", "nightly", 60, path=path)  # a TTL no loaded machine outlasts between two calls
    with pytest.raises(HostBusy, match="held by alice@c1 for campaign nightly"):
        acquire(host, "bob@c2", "other", 1, path=path)
    a.refresh()
    assert status(host, path=path).token == a.token and not status(host, path=path).expired
    beat = os.stat(path).st_mtime  # the heartbeat is the file's mtime: make it older than the TTL, not wait for it
    os.utime(path, (beat - 61, beat - 61))
    assert status(host, path=path).expired
    b = acquire(host, "bob@c2", "other", 1, path=path)
    with pytest.raises(HoldLost, match="held by bob@c2"):
        a.refresh()
    a.release()  # not ours any more: left alone
    assert status(host, path=path).owner == "bob@c2"
    assert force_release(host, path=path).owner == "bob@c2"
    assert status(host, path=path) is None
    b.release()
    with pytest.raises(Exception, match="at least 1 second"):
        acquire(host, "x@y", "z", 0.5, path=path)


CONTROLLER = """
import os, sys, time
from pathlib import Path
from runner.lab.reservations import hold_hosts
from runner.provision.inventory import load_inventory
from tests.events import wait_for

inventory, name, other, rounds, work = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
specs = load_inventory(inventory).resolve("testbed")
waits = []

def waited(message):
    waits.append(message)
    (work / f"{name}.waited").touch()

print("ready", flush=True)
wait_for(lambda: (work / "go").exists(), 600, poll=0.01)
for i in range(rounds):
    with hold_hosts(specs, f"{name}@test", f"camp-{name}", wait=True, timeout=120, ttl=30, poll_s=0.2, on_wait=waited) as hs:
        for host in hs.held:
            try:
                os.close(os.open(work / f"{host}.inuse", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                print(f"VIOLATION {host}", flush=True)
        # Keep the hosts until the other controller has met our holds and waited (or has finished), so the two
        # do meet however the machine schedules them (bounded, so nothing hangs).
        wait_for(lambda: (work / f"{other}.waited").exists() or (work / f"{other}.done").exists(), 60)
        time.sleep(0.3)
        for host in hs.held:
            os.unlink(work / f"{host}.inuse")
(work / f"{name}.done").touch()
print(f"done waits={len(waits)}", flush=True)
"""


def _controller(bed_inventory: Path, name: str, other: str, rounds: int, work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, str(bed_inventory), name, other, str(rounds), str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )


@pytest.mark.integration
@pytest.mark.netns
def test_two_controllers_race_for_testbed_hosts(testbed, tmp_path: Path) -> None:
    specs = load_inventory(testbed.inventory_path).resolve("testbed")
    # Default hold path: one hold per sshd's network namespace, although the test hosts share one disk.
    with connect(specs[0]) as h1, connect(specs[1]) as h2:
        a, b = acquire(h1, "x@test", "one", 5), acquire(h2, "y@test", "two", 5)
        assert a.path != b.path and a.path.startswith(reservations.hold_dir() + "/")
        a.release(), b.release()
        assert status(h1) is None and status(h2) is None
    procs = [_controller(testbed.inventory_path, n, o, 3, tmp_path) for n, o in (("alice", "bob"), ("bob", "alice"))]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        (tmp_path / "go").touch()
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "VIOLATION" not in out
    waits = sum(int(out.split("waits=")[1]) for out, _ in outs)
    assert waits > 0  # they did meet, and one waited for the other
    assert all(s.hold is None for s in hosts_cli.host_states(testbed.inventory_path, "testbed"))


KILLED = """
import sys, time
from runner.lab.reservations import hold_hosts
from runner.provision.inventory import load_inventory

specs = load_inventory(sys.argv[1]).resolve("tb1")
with hold_hosts(specs, "crashing@ctl", "doomed", ttl=8):  # a beat every 2 s
    print("HELD", flush=True)
    time.sleep(120)
"""


@pytest.mark.integration
@pytest.mark.netns
def test_killed_controller_hold_expires(testbed, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(testbed.inventory_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    try:
        assert proc.stdout.readline().strip() == "HELD", proc.stderr.read()
        held = hosts_cli.host_states(testbed.inventory_path, "tb1")[0].hold
        assert held is not None and held.owner == "crashing@ctl"
        taken = os.stat(held.path).st_mtime_ns  # the hosts share this file system; the mtime is the heartbeat
        assert wait_for(lambda: os.stat(held.path).st_mtime_ns != taken)  # a heartbeat came
        states = {s.host: s for s in hosts_cli.host_states(testbed.inventory_path, "testbed")}
        assert states["tb1"].hold.owner == "crashing@ctl" and not states["tb1"].hold.expired  # kept alive
        assert states["tb2"].hold is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    spec = load_inventory(testbed.inventory_path).resolve("tb1")
    with connect(spec[0]) as host, pytest.raises(HostBusy, match="crashing@ctl for campaign doomed"):
        acquire(host, "me@test", "next", 5)
    reasons: list[str] = []
    started = time.monotonic()
    with hold_hosts(spec, "me@test", "next", ttl=5, timeout=120, poll_s=0.3, on_wait=reasons.append) as hs:
        assert set(hs.held) == {"tb1"}
        assert time.monotonic() - started > 0.5
        assert reasons and reasons[0].startswith("waiting for host tb1: held by crashing@ctl")
        # An administrator releases it by force: our hold is lost.
        mine = hs.held["tb1"]
        assert hosts_cli.release_host(testbed.inventory_path, "tb1").owner == "me@test"
        with pytest.raises(HoldLost):
            mine.refresh()
    with connect(spec[0]) as host:
        assert status(host) is None


@pytest.mark.integration
@pytest.mark.netns
def test_relaunch_after_sigkill_takes_over_its_own_hold_at_once(testbed) -> None:
    """The same owner and campaign on the same controller: the SIGKILLed process is gone, so its hold on a
    test-bed host is taken over at once instead of after the TTL (issue 13)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED.replace("ttl=8", "ttl=60"), str(testbed.inventory_path)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    try:
        assert proc.stdout.readline().strip() == "HELD", proc.stderr.read()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    spec = load_inventory(testbed.inventory_path).resolve("tb1")
    notes: list[str] = []
    with hold_hosts(spec, "crashing@ctl", "doomed", ttl=60, timeout=30, on_wait=notes.append) as hs:
        assert set(hs.held) == {"tb1"}
    # At once: on the first try, with no "waiting for host tb1" note (the dead holder's TTL of 60 s is longer
    # than the timeout, so waiting it out would have ended in HostBusy).
    assert notes == [f"host tb1: took over the hold of campaign doomed from process {proc.pid} on {socket.gethostname()}, which is gone"]
    with connect(spec[0]) as host:
        assert status(host) is None


@pytest.mark.integration
@pytest.mark.netns
def test_skip_busy_hosts(testbed) -> None:
    specs = load_inventory(testbed.inventory_path).resolve("testbed")
    with hold_hosts(specs[:1], "first@test", "a", ttl=5) as first:
        seen: list[str] = []
        with hold_hosts(specs, "second@test", "b", wait=False, ttl=5, on_wait=seen.append) as second:
            assert set(second.held) == {"tb2", "tb3"} and set(second.skipped) == {"tb1"}
            assert seen == [f"skipping host tb1: {second.skipped['tb1'].describe()}"]
        with pytest.raises(HostBusy, match="gave up after 0.5 s: host tb1 is held by first@test"):
            with hold_hosts(specs, "third@test", "c", ttl=5, timeout=0.5, poll_s=0.1):
                pass
        assert set(first.held) == {"tb1"}
