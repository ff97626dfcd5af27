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


# ------------------------------------------------------------------ which hosts take which environments (pure)

from runner.errors import UsageError  # noqa: E402
from runner.execution.placement import EnvPlacement, declared_abilities, makespan, place_envs  # noqa: E402

import pytest  # noqa: E402

NEEDS_XL = "needs xl (a Xen dom0 with xen-utils); not found there"
NEEDS_VIRSH = "needs virsh (libvirt-clients and libvirt-daemon-system); not found there"
DOM0_KVM = "it is a Xen dom0 (no KVM there; its guests would run under TCG)"


def _trial(env: str, n: int = 0, host: str | None = None, key: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(param_dict={"env": env}, n=n, host=host, key=key)


def _kvm_and_xen() -> dict[str, dict[str, str | None]]:
    """A KVM host (libvirt, no xl) and a Xen dom0 (xl, no virsh), as the probes would find them."""
    return {
        "kvm1": {"host": None, "kvm": None, "xen-pv": NEEDS_XL, "xen-hvm": NEEDS_XL},
        "xen1": {"host": None, "kvm": NEEDS_VIRSH, "xen-pv": None, "xen-hvm": None},
    }


def test_each_environment_goes_to_the_hosts_that_run_it() -> None:
    placed = place_envs(["host", "kvm", "xen-pv", "xen-hvm"], _kvm_and_xen(), group="vmhosts")
    assert placed.hosts == {"host": ("kvm1", "xen1"), "kvm": ("kvm1",), "xen-pv": ("xen1",), "xen-hvm": ("xen1",)}
    assert not placed.left_out and not placed.notes
    assert placed.runs("kvm1", "kvm") and not placed.runs("kvm1", "xen-pv") and placed.runs("xen1", "host")
    assert placed.envs_of("xen1") == ("host", "xen-pv", "xen-hvm") and not placed.runs_all("kvm1")
    assert placed.runs("elsewhere", "kvm")  # a host not probed (unreachable at the start) is not refused here
    assert placed.lines() == ["kvm1: host, kvm", "xen1: host, xen-pv, xen-hvm"]


def test_the_bare_host_goes_to_a_host_that_is_not_a_xen_dom0() -> None:
    placed = place_envs(["host", "container", "kvm", "xen-pv"], {**_kvm_and_xen(), "kvm1": {**_kvm_and_xen()["kvm1"], "container": None},
                                                                 "xen1": {**_kvm_and_xen()["xen1"], "container": None}},
                        own_kernel={"host", "container"}, dom0={"xen1"})
    assert placed.hosts["host"] == ("kvm1",) and placed.hosts["container"] == ("kvm1",)
    assert placed.notes == ("env host runs on kvm1 only: xen1 is a Xen dom0, whose kernel is a guest of Xen",
                            "env container runs on kvm1 only: xen1 is a Xen dom0, whose kernel is a guest of Xen")
    # a group of Xen dom0s only: their own kernels are all there is
    alone = place_envs(["host", "xen-pv"], {"xen1": _kvm_and_xen()["xen1"]}, own_kernel={"host"}, dom0={"xen1"})
    assert alone.hosts == {"host": ("xen1",), "xen-pv": ("xen1",)} and not alone.notes


def test_an_environment_no_host_runs_is_one_line_naming_the_hosts_and_why() -> None:
    abilities = {"kvm1": {"host": None, "kvm": None, "xen-hvm": NEEDS_XL, "container": "needs podman or docker (podman and runc); not found there"},
                 "xen1": {"host": None, "kvm": DOM0_KVM, "xen-hvm": "its Xen has no device model for HVM guests", "container": "x"}}
    with pytest.raises(UsageError) as err:
        place_envs(["host", "kvm", "xen-hvm", "container"], abilities, group="vmhosts")
    msg = str(err.value)
    assert msg == (f"env xen-hvm: no host of 'vmhosts' can run it: kvm1: {NEEDS_XL}; xen1: its Xen has no device model for HVM guests "
                   "(nor can any run env container)")
    assert "\n" not in msg


def test_a_host_that_runs_none_of_the_environments_is_left_out_in_one_line() -> None:
    placed = place_envs(["kvm"], _kvm_and_xen(), group="vmhosts")
    assert placed.hosts == {"kvm": ("kvm1",)}
    assert placed.left_out == {"xen1": f"host xen1 left out: it runs none of the campaign's environments (kvm: {NEEDS_VIRSH})"}
    assert placed.lines()[-1] == placed.left_out["xen1"]


def test_declared_environments_as_the_inventory_gives_them() -> None:
    specs = [SimpleNamespace(name="kvm1", envs=("host", "kvm")), SimpleNamespace(name="any", envs=None)]
    assert declared_abilities(["host", "xen-pv"], specs) == {
        "kvm1": {"host": None, "xen-pv": "not in its runner_envs (host, kvm)"}, "any": {"host": None, "xen-pv": None}}


def test_pool_hosts_take_the_first_trial_they_can_run() -> None:
    placed = place_envs(["host", "kvm", "xen-pv"], _kvm_and_xen())
    pool = Placement("pool").with_envs(placed)
    queue = [(_trial("xen-pv", 1), 1), (_trial("kvm", 2), 1), (_trial("host", 3), 1)]
    assert pool.pick(queue, "kvm1") == 1 and pool.pick(queue, "xen1") == 0
    assert pool.pick(queue[:1], "kvm1") is None and pool.pick([], "xen1") is None
    assert Placement("pool").pick(queue, "kvm1") == 0  # no environments known: the first trial


def test_the_estimate_follows_the_hosts_that_run_each_environment() -> None:
    """Two hosts: the one that runs xen-pv runs all of them, whatever the other host could take."""
    placed = place_envs(["host", "xen-pv"], {"a": {"host": None, "xen-pv": NEEDS_XL}, "b": {"host": None, "xen-pv": None}})
    pool = Placement("pool").with_envs(placed)
    trials = [_trial("xen-pv", i) for i in range(4)] + [_trial("host", 9)]
    total, per_host = makespan(trials, ["a", "b"], lambda h, t, prev: 10.0, runs=pool.runs)
    assert per_host == {"a": 10.0, "b": 40.0} and total == 40.0
    # no restriction: shared evenly; a boot only when the guest configuration changes on that host
    cost = lambda h, t, prev: 1.0 + (5.0 if prev is None or prev.key != t.key else 0.0)  # noqa: E731
    same = [_trial("kvm", i, key="g") for i in range(4)]
    assert makespan(same, ["a", "b"], cost) == (7.0, {"a": 7.0, "b": 7.0})
    assert makespan(same, ["a"], cost) == (9.0, {"a": 9.0})
    # placement each: every host its own trials
    each = [_trial("host", 1, host="a"), _trial("host", 2, host="a"), _trial("host", 3, host="b")]
    assert makespan(each, ["a", "b"], lambda h, t, prev: 2.0, per_host=True) == (4.0, {"a": 4.0, "b": 2.0})
    # each trial's own seconds, for the progress's weights: the boots fall on the first trial of each host
    costs: dict[str, float] = {}
    named = [SimpleNamespace(**vars(t), trial_id=f"t{i}") for i, t in enumerate(same)]
    makespan(named, ["a", "b"], cost, costs=costs)
    assert costs == {"t0": 6.0, "t1": 6.0, "t2": 1.0, "t3": 1.0}


def test_the_eta_weighs_what_is_left_by_its_estimate_not_by_its_count() -> None:
    """One guest boot (100 s estimated) and nine bare-host runs (10 s each): the boot ended after 100 s. Counting
    trials says 9 x 100 s are left; the estimates say 90 s of work against 100 s done in 100 s: 90 s."""
    from runner.execution.dispatch import Progress

    p = Progress(total=10, started=0.0, estimate_s=190.0, weights={"boot": 100.0, **{f"h{i}": 10.0 for i in range(9)}})
    p.weight_mean = 19.0
    assert p.eta_s(now=5.0) == 190.0  # nothing ended yet: the estimate
    p.done += 1
    p.finished("boot")
    assert p.eta_s(now=100.0) == pytest.approx(90.0)  # the linear ETA said 900
    p.total += 1  # a canary run the estimate did not cover counts as the mean
    assert p.eta_s(now=100.0) == pytest.approx(109.0)
    p.done += 1
    p.finished("canary")
    assert p.weight_done == pytest.approx(119.0) and len(p.weights) == 9


def test_env_placement_of_an_environment_outside_the_campaign() -> None:
    placed = EnvPlacement({"kvm": ("kvm1",)})
    assert placed.runs("xen1", "kvm") is True  # xen1 was not probed: not refused
    assert placed.runs("kvm1", "xen-pv") is True  # xen-pv is not one of the campaign's environments


def test_an_unknown_environment_in_runner_envs_names_the_known_ones() -> None:
    from runner.execution.preflight import check_host_envs

    with pytest.raises(UsageError, match=r"^host kvm1: runner_envs: no environment 'kvmm'; known: host, "):
        check_host_envs([SimpleNamespace(name="kvm1", envs=("kvm", "kvmm"))])
    check_host_envs([SimpleNamespace(name="any", envs=None), SimpleNamespace(name="kvm1", envs=("host", "kvm"))])
