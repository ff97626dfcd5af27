"""A host's next trial waits in its worker while the previous one runs (dispatch.Dispatch._depth): the
worker's turn (worker._turn) gives the host to one trial at a time, in the order the controller sent them,
across threads and processes of this machine."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

from runner.execution import worker
from runner.execution.worker import AttemptSpec
from runner.hosts.ssh import HostSpec
from tests.events import wait_for


def spec(port: int, n: int | None, launch: str = "L1") -> AttemptSpec:
    host = HostSpec("tbx", "127.0.0.1", port)  # only its address names the host's turn; nothing connects
    return AttemptSpec(trial=None, attempt=1, host=host, timeout=1, workdir="/nonexistent", turn=None if n is None else (launch, n))


class _Watched(threading.Condition):
    """worker._turns, saying when a trial starts waiting for its predecessor."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait_for(self, predicate, timeout=None):  # noqa: ANN001, ANN201 - threading.Condition's signature
        self.waiting.set()
        return super().wait_for(predicate, timeout)


def _lock_file(port: int) -> Path:
    """The flock file of the test host on `port` (worker._turn's)."""
    name = worker.lease_name(spec(port, None).host)
    return Path(tempfile.gettempdir()) / f"runner-turns-{os.getuid()}" / (hashlib.sha256(name.encode()).hexdigest()[:24] + ".lock")


def _blocked_on(path: str) -> bool:
    """Someone waits for the flock on `path` (a '->' line of /proc/locks names its inode)."""
    ino = os.stat(path).st_ino
    with open("/proc/locks") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 6 and parts[1] == "->" and parts[6].endswith(f":{ino}"):
                return True
    return False


def test_trials_take_the_host_in_the_order_they_were_sent(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    turns = _Watched()
    monkeypatch.setattr(worker, "_turns", turns)
    lock = _lock_file(40001)
    order: list[int] = []
    seen_waiting: list[bool] = []

    def trial(n: int) -> None:
        with worker._turn(spec(40001, n)):
            order.append(n)
            if n == 1:  # the second waits for the host meanwhile: seen in /proc/locks, however loaded the machine
                seen_waiting.append(wait_for(lambda: _blocked_on(str(lock)), 600))

    second = threading.Thread(target=trial, args=(2,))
    second.start()  # sent second, arrives first: it waits for trial 1
    assert turns.waiting.wait(600)  # the event: it waits for its predecessor to take the host
    assert order == []
    first = threading.Thread(target=trial, args=(1,))
    first.start()
    first.join(600)
    second.join(600)
    assert seen_waiting == [True]
    assert order == [1, 2]


def test_a_predecessor_that_never_comes_delays_at_most_the_grace(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(worker, "TURN_GRACE_S", 0.3)
    t0 = time.monotonic()
    with worker._turn(spec(40002, 5, launch="L2")):  # trial 4 went elsewhere (worker churn)
        waited = time.monotonic() - t0
    assert 0.25 <= waited < 5


def _hold_the_host(port: int, started, release) -> None:  # noqa: ANN001 - multiprocessing events
    with worker._turn(spec(port, 1, launch="L3")):
        started.set()
        release.wait(600)  # set by the test (also when it fails): held until then, however slow the test


def test_the_host_is_held_across_processes() -> None:
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_the_host, args=(40003, started, release))
    other.start()
    try:
        assert started.wait(600)
        got = threading.Event()

        def take() -> None:
            with worker._turn(spec(40003, 1, launch="L4")):
                got.set()

        taker = threading.Thread(target=take)
        taker.start()
        assert wait_for(lambda: _blocked_on(str(_lock_file(40003))), 600)  # it waits: the other process has the host
        assert not got.is_set()
        release.set()
        assert got.wait(600)  # and this one gets it when that trial ends
        taker.join(600)
    finally:
        release.set()
        other.join(10)


def test_no_turn_no_wait() -> None:
    with worker._turn(spec(40004, 1, launch="L5")):
        with worker._turn(spec(40004, None)):  # a shared scheduler's trial: the host lease orders those
            pass
