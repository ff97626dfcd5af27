"""A host's next trial waits in its worker while the previous one runs (campaign._Dispatch._depth): the
worker's turn (worker._turn) gives the host to one trial at a time, in the order the controller sent them,
across threads and processes of this machine."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from runner.execution import worker
from runner.execution.worker import AttemptSpec
from runner.hosts.ssh import HostSpec


def spec(port: int, n: int | None, launch: str = "L1") -> AttemptSpec:
    host = HostSpec("tbx", "127.0.0.1", port)  # only its address names the host's turn; nothing connects
    return AttemptSpec(trial=None, attempt=1, host=host, timeout=1, workdir="/nonexistent", turn=None if n is None else (launch, n))


def test_trials_take_the_host_in_the_order_they_were_sent(tmp_path: Path) -> None:
    order: list[int] = []
    in_turn = threading.Event()

    def trial(n: int) -> None:
        with worker._turn(spec(40001, n)):
            order.append(n)
            if n == 1:
                in_turn.set()
                time.sleep(0.2)  # the second waits for the host meanwhile

    second = threading.Thread(target=trial, args=(2,))
    second.start()  # sent second, arrives first: it waits for trial 1
    time.sleep(0.1)
    assert order == []
    first = threading.Thread(target=trial, args=(1,))
    first.start()
    first.join(5)
    second.join(5)
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
        release.wait(10)


def test_the_host_is_held_across_processes() -> None:
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_the_host, args=(40003, started, release))
    other.start()
    try:
        assert started.wait(10)
        got = threading.Event()

        def take() -> None:
            with worker._turn(spec(40003, 1, launch="L4")):
                got.set()

        taker = threading.Thread(target=take)
        taker.start()
        assert not got.wait(0.3)  # the other process has the host
        release.set()
        assert got.wait(10)  # and this one gets it when that trial ends
        taker.join(5)
    finally:
        release.set()
        other.join(10)


def test_no_turn_no_wait() -> None:
    with worker._turn(spec(40004, 1, launch="L5")):
        with worker._turn(spec(40004, None)):  # a shared scheduler's trial: the host lease orders those
            pass
