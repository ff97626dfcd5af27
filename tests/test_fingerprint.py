"""Fingerprint summaries and diffs on recorded facts of other machines; the local collector's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import ProvisionError
from runner.provision.fingerprint import Change, collect_local, diff_fingerprints, flatten, load_facts, summarize

FACTS = Path(__file__).parent / "data" / "facts"


def facts(name: str) -> dict:
    return load_facts(FACTS / f"{name}.json")


def test_summarize_80_core_box():
    s = summarize(facts("lab80-intel-8node-pstate"))
    assert s == {
        "cpu_model": "Intel(R) Xeon(R) CPU E7-8870 @ 2.40GHz",
        "sockets": 8,
        "cores": 80,
        "threads": 80,
        "numa_nodes": 8,
        "kernel": "4.19.0-27-amd64",
        "cmdline": "BOOT_IMAGE=/boot/vmlinuz-4.19.0-27-amd64 root=UUID=0a1b ro quiet",
        "smt": "off",
        "governor": "powersave",
        "turbo": True,
        "thp": "always",
        "microcode": "0x37",
        "hypervisor": "none",
    }


def test_summarize_120_core_smt_box_and_vm():
    big = summarize(facts("lab120-intel-8node-smt-on"))
    assert (big["cores"], big["threads"], big["smt"], big["numa_nodes"]) == (120, 240, "on", 8)
    vm = summarize(facts("vm-2cpu-kvm-guest"))
    assert vm["governor"] is None and vm["turbo"] is None and vm["hypervisor"] == "kvm"


def test_mixed_governors_are_reported_as_mixed():
    f = facts("lab80-intel-8node-pstate")
    f["cpufreq"]["policies"]["policy3"]["governor"] = "performance"
    assert summarize(f)["governor"] == "mixed"


def test_diff_flattens_key_paths():
    before = facts("lab80-intel-8node-pstate")
    after = json.loads(json.dumps(before))
    after["cpufreq"]["policies"]["policy0"]["governor"] = "performance"
    after["turbo"]["enabled"] = False
    del after["virt"]["qemu"]
    after["kernel"]["new_key"] = "x"
    assert diff_fingerprints(before, after) == [
        Change("cpufreq.policies.policy0.governor", "powersave", "performance"),
        Change("kernel.new_key", None, "x"),
        Change("turbo.enabled", True, False),
        Change("virt.qemu", "7.2.15", None),
    ]
    assert diff_fingerprints(before, before) == []


def test_flatten_keeps_lists_whole():
    assert flatten({"a": {"b": [1, 2], "c": {}}, "d": 1}) == {"a.b": [1, 2], "a.c": {}, "d": 1}


def test_load_facts_refuses_unknown_version(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ProvisionError, match=r"h.json: facts version 99 is not 1"):
        load_facts(path)


def test_collect_local_has_the_recorded_shape():
    local = collect_local()
    recorded = facts("vm-2cpu-kvm-guest")
    assert local.keys() == recorded.keys()
    assert local["cpu"]["threads"] >= 1 and local["numa"]["nodes"]
    assert set(summarize(local)) == set(summarize(recorded))
