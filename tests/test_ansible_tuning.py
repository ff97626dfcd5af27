"""plan_tuning / knobs_from_vars / merge_state on recorded facts of other machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.provision.fingerprint import load_facts
from runner.provision.tuning import SysfsWrite, TuningKnobs, knobs_from_vars, merge_state, plan_tuning

FACTS = Path(__file__).parent / "data" / "facts"
LAB80 = load_facts(FACTS / "lab80-intel-8node-pstate.json")
LAB120 = load_facts(FACTS / "lab120-intel-8node-smt-on.json")
VM = load_facts(FACTS / "vm-2cpu-kvm-guest.json")


def test_no_knobs_no_changes():
    for facts in (LAB80, LAB120, VM):
        plan = plan_tuning(facts, TuningKnobs())
        assert plan.changes == 0 and not plan.unsupported and not plan.blocked


def test_80_core_intel_pstate_box():
    knobs = knobs_from_vars({"host_tuning_governor": "performance", "host_tuning_turbo": False,
                             "host_tuning_thp": "never", "host_tuning_irqbalance": "stopped",
                             "host_tuning_smt": "off"})
    plan = plan_tuning(LAB80, knobs)
    governors = [w for w in plan.sysfs if w.knob == "governor"]
    assert len(governors) == 80
    assert governors[0] == SysfsWrite("governor", "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor",
                                      "powersave", "performance")
    assert SysfsWrite("turbo", "/sys/devices/system/cpu/intel_pstate/no_turbo", "0", "1") in plan.sysfs
    assert SysfsWrite("thp", "/sys/kernel/mm/transparent_hugepage/enabled", "always", "never") in plan.sysfs
    assert not [w for w in plan.sysfs if w.knob == "smt"]  # already off
    assert plan.stop_services == ("irqbalance",)
    assert plan.changes == 83 and not plan.unsupported
    state = plan.state()
    assert state["sysfs"]["/sys/devices/system/cpu/intel_pstate/no_turbo"] == "0"
    assert state["services"] == ["irqbalance"]


def test_120_core_box_smt_on_with_boost():
    plan = plan_tuning(LAB120, knobs_from_vars({"smt": "off", "turbo": False, "irqbalance": "stopped"}))
    assert SysfsWrite("smt", "/sys/devices/system/cpu/smt/control", "on", "off") in plan.sysfs
    assert SysfsWrite("turbo", "/sys/devices/system/cpu/cpufreq/boost", "1", "0") in plan.sysfs
    assert plan.stop_services == ()  # installed but not running


def test_vm_without_cpufreq_reports_instead_of_failing():
    plan = plan_tuning(VM, knobs_from_vars({"governor": "performance", "turbo": False, "smt": "off",
                                            "irqbalance": "stopped", "kvm_params": {"kvm_intel": {"ple_gap": 0}}}))
    assert plan.changes == 0 and not plan.blocked
    assert {n.knob for n in plan.unsupported} == {"governor", "turbo", "smt", "irqbalance", "kvm_params"}


def test_unavailable_governor_is_unsupported():
    plan = plan_tuning(LAB80, knobs_from_vars({"governor": "ondemand"}))
    assert plan.changes == 0 and len(plan.unsupported) == 80
    assert "does not offer 'ondemand'" in plan.unsupported[0].reason


def test_kvm_params_need_reload_permission():
    knobs = {"kvm_params": {"kvm_intel": {"ple_gap": 0, "nested": False}}}
    blocked = plan_tuning(LAB80, knobs_from_vars(knobs))
    assert blocked.changes == 0
    # nested is already N: only ple_gap differs
    assert blocked.blocked[0].reason == "kvm_intel.ple_gap=0 needs a module reload; set host_tuning_allow_reload: true"
    plan = plan_tuning(LAB80, knobs_from_vars({**knobs, "allow_reload": True}))
    (reload,) = plan.module_reloads
    assert (reload.module, dict(reload.params), dict(reload.old)) == (
        "kvm_intel", {"ple_gap": "0", "nested": "N"}, {"ple_gap": "128", "nested": "N"})
    reload_kvm = plan_tuning(LAB80, knobs_from_vars({"kvm_params": {"kvm": {"halt_poll_ns": 0}}, "allow_reload": True}))
    assert reload_kvm.module_reloads[0].dependents == ("kvm_intel",)
    same = plan_tuning(LAB80, knobs_from_vars({"kvm_params": {"kvm_intel": {"ple_gap": 128}}}))
    assert same.changes == 0 and not same.blocked


def test_cmdline_needs_reboot_permission_and_reports_reboot():
    blocked = plan_tuning(LAB120, knobs_from_vars({"cmdline_add": ["nosmt", "quiet"]}))
    assert blocked.blocked[0].reason == "adding nosmt needs a reboot; set host_tuning_allow_reboot: true"
    plan = plan_tuning(LAB120, knobs_from_vars({"cmdline_add": ["nosmt", "quiet"], "allow_reboot": True}))
    assert plan.cmdline_add == ("nosmt",) and plan.reboot_required
    assert plan.to_dict()["reboot_required"] is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"govenor": "performance"}, "tune.yml: unknown knob 'govenor'; known: governor, turbo"),
        ({"smt": "maybe"}, "tune.yml: smt: 'maybe' is not allowed; choose one of on, off or null"),
        ({"turbo": "no"}, "tune.yml: turbo: 'no' is not a boolean or null"),
        ({"governor": "Perf mode"}, "tune.yml: governor: 'Perf mode' is not a cpufreq governor name"),
        ({"kvm_params": {"kvm_intl": {"ple_gap": 0}}}, "tune.yml: kvm_params.kvm_intl: unknown module"),
        ({"cmdline_add": "nosmt"}, "tune.yml: cmdline_add: 'nosmt' must be a list"),
        ({"allow_reboot": None}, "tune.yml: allow_reboot: None is not a boolean"),
    ],
)
def test_bad_knobs_are_named(values, message):
    with pytest.raises(UsageError) as err:
        knobs_from_vars(values, "tune.yml")
    assert str(err.value).startswith(message)


def test_merge_state_keeps_the_oldest_values():
    first = {"version": 1, "sysfs": {"/a": "1"}, "services": ["irqbalance"], "modules": {"kvm": {"x": "1"}},
             "cmdline_add": []}
    second = {"version": 1, "sysfs": {"/a": "2", "/b": "0"}, "services": ["irqbalance"],
              "modules": {"kvm": {"x": "2", "y": "3"}}, "cmdline_add": ["nosmt"]}
    assert merge_state(first, second) == {
        "version": 1, "sysfs": {"/a": "1", "/b": "0"}, "services": ["irqbalance"],
        "modules": {"kvm": {"x": "1", "y": "3"}}, "cmdline_add": ["nosmt"]}
    assert merge_state(None, second)["sysfs"] == second["sysfs"]
    with pytest.raises(UsageError, match="state file version 7"):
        merge_state({"version": 7}, second)
