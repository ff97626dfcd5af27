"""Placement each/pool as one object (runner.execution.placement), and the launch context."""

from __future__ import annotations

from types import SimpleNamespace

from runner.execution.campaign import LaunchContext, Placement


def test_each_gives_every_host_its_own_queue() -> None:
    each = Placement("each")
    trials = [(SimpleNamespace(host="a", n=1), 1), (SimpleNamespace(host="b", n=2), 1), (SimpleNamespace(host="a", n=3), 2)]
    queues = each.queues(trials, {"a", "b", "dead"})
    assert each.per_host and each.queue_key("a") == "a"
    assert [t.n for t, _ in queues["a"]] == [1, 3] and [t.n for t, _ in queues["b"]] == [2] and not queues["dead"]


def test_pool_shares_one_queue() -> None:
    pool = Placement.of(SimpleNamespace(placement="pool"))
    trials = [(SimpleNamespace(host=None, n=i), 1) for i in range(3)]
    assert not pool.per_host and pool.queue_key("a") is None
    assert list(pool.queues(trials, {"a", "b"})) == [None] and len(pool.queues(trials, {"a"})[None]) == 3


def test_launch_context_defaults() -> None:
    ctx = LaunchContext(matrix=None, store=None, scheduler=None, inventory=None)
    assert ctx.notes == [] and ctx.holds is None and ctx.command_line == ()
