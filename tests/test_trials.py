"""Expansion (cross, zip, exclude, include, relative values), trial ids and ordering."""

from collections import Counter

import pytest

from runner.matrix.expand import expand_cells, resolve_value
from runner.matrix.load import parse_matrix
from runner.trials import order_trials, plan

BASE = "campaign: c\nworkload: {name: lockbench}\n"


def test_cross_product_in_written_order() -> None:
    cells = expand_cells({"a": [1, 2], "b": ["x", "y", "z"]})
    assert cells == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]


def test_zip_varies_together() -> None:
    cells = expand_cells({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0, 1]}, zip_groups=[["a", "b"]])
    assert len(cells) == 6
    assert {(c["a"], c["b"]) for c in cells} == {(1, "x"), (2, "y"), (3, "z")}


def test_exclude_and_include() -> None:
    cells = expand_cells(
        {"a": [1, 2], "b": ["x", "y"]},
        exclude=[{"a": 2, "b": "y"}, {"b": "x", "a": 1}],
        include=[{"a": 9, "b": "q"}, {"a": 1, "b": "y"}],  # the second is already there: no duplicate
    )
    assert cells == [{"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 9, "b": "q"}]


def test_relative_values() -> None:
    assert [resolve_value(v, 8) for v in ["50%", "100%", "200%", "1%", 3, "x"]] == [4, 8, 16, 1, 3, "x"]
    assert resolve_value("150%", 120) == 180


def test_relative_values_resolve_per_host_cpu_count() -> None:
    m = parse_matrix(BASE + "axes: {threads: [1, '50%', '100%', '200%']}\nrepetitions: 1\n")
    assert [t.param_dict["threads"] for t in plan(m, {"h": 8})] == [1, 4, 8, 16]
    # On 2 CPUs, 50% is 1: the same cell as 1, kept once.
    assert [t.param_dict["threads"] for t in plan(m, {"h": 2})] == [1, 2, 4]


def test_relative_values_follow_the_environment() -> None:
    """In a guest or container "100%" means its vCPUs (cpuset), on the host the trial's vcpus; vcpus itself
    is relative to the host's CPUs."""
    m = parse_matrix(BASE + "axes:\n  env: [host, kvm, container]\n  vcpus: ['50%']\n  threads: ['100%']\nrepetitions: 1\n")
    got = {(dict(t.params)["env"], dict(t.params)["threads"], dict(t.params)["vcpus"]) for t in plan(m, {"h": 8})}
    assert got == {("host", 4, 4), ("kvm", 4, 4), ("container", 4, 4)}
    m = parse_matrix(BASE + "axes: {threads: ['100%']}\nrepetitions: 1\n")
    assert dict(plan(m, {"h": 8})[0].params)["threads"] == 8  # no vcpus: the host's CPUs
    m = parse_matrix("campaign: c\nworkload: {name: lockbench, params: {env: kvm}}\naxes: {threads: ['50%']}\nrepetitions: 1\n")
    assert dict(plan(m, {"h": 8})[0].params)["threads"] == 4  # no vcpus: a guest gets all host CPUs


def test_trial_ids_are_deterministic_and_unique() -> None:
    text = BASE + "axes: {lock: [ttas, ticket], threads: [1, 2]}\nrepetitions: 3\norder: shuffle\nseed: 7\n"
    a = plan(parse_matrix(text), {"h": 4})
    b = plan(parse_matrix(text), {"h": 4})
    assert [t.trial_id for t in a] == [t.trial_id for t in b]
    assert len({t.trial_id for t in a}) == 12
    assert len({t.cell_id for t in a}) == 4
    # The id depends on the parameters and repetition, not on the order or the campaign's text layout.
    c = plan(parse_matrix(text.replace("order: shuffle", "order: as-written")), {"h": 4})
    assert {t.trial_id for t in a} == {t.trial_id for t in c}
    d = plan(parse_matrix(text.replace("threads: [1, 2]", "threads: [1, 3]")), {"h": 4})
    assert len({t.trial_id for t in a} & {t.trial_id for t in d}) == 6


def test_orders() -> None:
    m = parse_matrix(BASE + "axes: {lock: [ttas, ticket, mcs]}\nrepetitions: 2\norder: as-written\n")
    written = plan(m, {"h": 2})
    assert [(t.param_dict["lock"], t.repetition) for t in written] == [
        ("ttas", 1), ("ttas", 2), ("ticket", 1), ("ticket", 2), ("mcs", 1), ("mcs", 2)
    ]
    per_cell = [written[i : i + 2] for i in range(0, 6, 2)]
    inter = order_trials(per_cell, "interleave", 0)
    assert [t.repetition for t in inter] == [1, 1, 1, 2, 2, 2]
    s1 = order_trials(per_cell, "shuffle", 1)
    assert Counter(t.trial_id for t in s1) == Counter(t.trial_id for t in written)
    assert [t.trial_id for t in s1] == [t.trial_id for t in order_trials(per_cell, "shuffle", 1)]
    assert [t.trial_id for t in s1] != [t.trial_id for t in order_trials(per_cell, "shuffle", 2)]


def test_each_placement_gives_every_host_the_matrix() -> None:
    m = parse_matrix("campaign: c\nworkload: {name: lockbench}\nhosts: {group: lab, placement: each}\naxes: {threads: ['100%']}\nrepetitions: 2\n")
    trials = plan(m, {"a": 4, "b": 8})
    assert sorted((t.host, t.param_dict["threads"]) for t in trials) == [("a", 4), ("a", 4), ("b", 8), ("b", 8)]
    assert len({t.trial_id for t in trials}) == 4


def test_estimates_add_the_environments_set_up() -> None:
    from runner.execution.environments import estimate_seconds
    from runner.provision import environments
    from runner.workloads import base

    setup = {name: environments.get(name).setup_estimate_s for name in ("kvm", "container")}

    lockbench = base.get("lockbench")
    host = estimate_seconds(lockbench, {"duration": 1.0})
    assert host == lockbench.estimate_seconds({"duration": 1.0})
    assert estimate_seconds(lockbench, {"duration": 1.0, "env": "kvm", "vms": 2}) == host + 2 * setup["kvm"]
    assert estimate_seconds(lockbench, {"duration": 1.0, "env": "container", "vms": 4}) == host + setup["container"]


def test_reuse_groups_guest_configurations_and_counts_boots() -> None:
    """With reuse (the default), the trials of one guest configuration run back to back; the order still
    orders the configurations and the trials inside one. Ids do not depend on it."""
    from runner.trials import boots_needed, group_by_guests, trial_guest_key

    text = BASE + "axes: {env: [kvm], vms: [1, 2], lock: [ttas, ticket]}\nrepetitions: 2\norder: interleave\n"
    grouped = plan(parse_matrix(text), {"h": 2})
    per_trial = plan(parse_matrix(text + "guests: {reuse: trial}\n"), {"h": 2})
    assert {t.trial_id for t in grouped} == {t.trial_id for t in per_trial}
    assert [t.param_dict["vms"] for t in per_trial] == [1, 1, 2, 2, 1, 1, 2, 2]  # interleaved as written
    assert [t.param_dict["vms"] for t in grouped] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [(t.param_dict["lock"], t.repetition) for t in grouped[:4]] == [("ttas", 1), ("ticket", 1), ("ttas", 2), ("ticket", 2)]
    assert boots_needed(grouped, "configuration") == 2 and boots_needed(per_trial, "trial") == 8
    assert boots_needed(per_trial, "configuration") == 4  # ungrouped, the configuration changes 3 times
    assert trial_guest_key(grouped[0]) == trial_guest_key(grouped[3]) != trial_guest_key(grouped[4])
    # Bare-host trials have no configuration and keep their order; guest keys differ by env and by campaign.
    host_trials = plan(parse_matrix(BASE + "axes: {lock: [ttas, ticket]}\nrepetitions: 2\n"), {"h": 2})
    assert group_by_guests(host_trials) == host_trials and boots_needed(host_trials, "configuration") == 0
    assert trial_guest_key(host_trials[0]) is None


def test_estimate_counts_one_set_up_per_boot() -> None:
    from runner.execution.environments import estimate_trials
    from runner.provision import environments
    from runner.workloads import base

    setup = {"kvm": environments.get("kvm").setup_estimate_s}

    lockbench = base.get("lockbench")
    text = BASE + "workload: {name: lockbench, params: {duration: 1}}\naxes: {env: [kvm], lock: [ttas, ticket]}\nrepetitions: 3\n"
    text = text.replace("workload: {name: lockbench}\n", "", 1)
    trials = plan(parse_matrix(text), {"h": 2})
    work = sum(lockbench.estimate_seconds(t.param_dict) for t in trials)
    assert estimate_trials(lockbench, trials, "configuration") == pytest.approx(work + setup["kvm"])
    assert estimate_trials(lockbench, trials, "trial") == pytest.approx(work + 6 * setup["kvm"])
