"""What host tuning would change: pure decisions over recorded facts, no I/O.

`knobs_from_vars()` validates the requested knobs (the `host_tuning_*` variables of the Ansible role
`host_tuning`, prefix optional), `plan_tuning(facts, knobs)` compares them with a host's facts (the JSON of
`playbooks/roles/host_facts/files/collect_facts.py`) and returns what to write, what to stop, which module
to reload, which kernel arguments to add, and which knobs this hardware does not have. The role calls these
functions through its filter plugin (playbooks/roles/host_tuning/filter_plugins/host_tuning.py), so the
role and the tests share one implementation.

State file (kept on the host by the role, read back by its restore tasks), version history:
  1: {"version", "sysfs": {path: old}, "services": [stopped], "modules": {module: {param: old}},
      "cmdline_add": [args]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import UsageError
from runner.textfile import read_text
from runner.util import parse_yaml

STATE_VERSION = 1
PREFIX = "host_tuning_"
SYS_CPU = "/sys/devices/system/cpu"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
SMT_CONTROL = f"{SYS_CPU}/smt/control"
THP_CHOICES = ("always", "madvise", "never")
SMT_CHOICES = ("on", "off")
IRQBALANCE_CHOICES = ("stopped",)
KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd")
_GOVERNOR = re.compile(r"^[a-z][a-z0-9_]*$")
_CMDLINE_ARG = re.compile(r"^[A-Za-z0-9_.,:=/+-]+$")


@dataclass(frozen=True)
class TuningKnobs:
    """Requested knobs; None (or empty) means leave the host as it is."""

    governor: str | None = None
    turbo: bool | None = None
    smt: str | None = None
    thp: str | None = None
    irqbalance: str | None = None
    kvm_params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    cmdline_add: tuple[str, ...] = ()
    allow_reload: bool = False
    allow_reboot: bool = False


KNOWN_KNOBS = tuple(TuningKnobs.__dataclass_fields__)


@dataclass(frozen=True)
class SysfsWrite:
    knob: str
    path: str
    old: str | None
    new: str


@dataclass(frozen=True)
class ModuleReload:
    """Reload `module` (after unloading `dependents`) so that `params` take effect."""

    module: str
    params: Mapping[str, str]
    old: Mapping[str, str]
    dependents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Note:
    knob: str
    reason: str


@dataclass(frozen=True)
class TuningPlan:
    sysfs: tuple[SysfsWrite, ...] = ()
    stop_services: tuple[str, ...] = ()
    module_reloads: tuple[ModuleReload, ...] = ()
    cmdline_add: tuple[str, ...] = ()
    unsupported: tuple[Note, ...] = ()  # the hardware/kernel lacks the knob: reported, not failed
    blocked: tuple[Note, ...] = ()  # needs a module reload or reboot that was not allowed

    @property
    def changes(self) -> int:
        return len(self.sysfs) + len(self.stop_services) + len(self.module_reloads) + len(self.cmdline_add)

    @property
    def reboot_required(self) -> bool:
        return bool(self.cmdline_add)

    def state(self) -> dict[str, Any]:
        """The previous values this plan overwrites, in the state-file format."""
        return {
            "version": STATE_VERSION,
            "sysfs": {w.path: w.old for w in self.sysfs if w.old is not None},
            "services": list(self.stop_services),
            "modules": {r.module: dict(r.old) for r in self.module_reloads},
            "cmdline_add": list(self.cmdline_add),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain data for Ansible: every field plus changes, reboot_required and state."""
        out = asdict(self)
        out.update(changes=self.changes, reboot_required=self.reboot_required, state=self.state())
        return out


def _choice(source: str, key: str, value: Any, choices: tuple[str, ...]) -> str | None:
    if value is None or value in choices:
        return value
    raise UsageError(f"{source}: {key}: {value!r} is not allowed; choose one of {', '.join(choices)} or null")


def _bool(source: str, key: str, value: Any, *, nullable: bool) -> bool | None:
    if isinstance(value, bool) or (nullable and value is None):
        return value
    raise UsageError(f"{source}: {key}: {value!r} is not a boolean{' or null' if nullable else ''}")


def _param_value(value: Any) -> str:
    """Normalize a module parameter the way /sys/module/*/parameters shows it (booleans as Y/N)."""
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)


def knobs_from_vars(values: Mapping[str, Any], source: str = "tuning") -> TuningKnobs:
    """Validate knobs given as `host_tuning_*` variables or short names; `source` prefixes messages."""
    raw = {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in values.items()}
    for key in raw:
        if key not in KNOWN_KNOBS:
            raise UsageError(f"{source}: unknown knob {key!r}; known: {', '.join(KNOWN_KNOBS)}")
    governor = raw.get("governor")
    if governor is not None and not (isinstance(governor, str) and _GOVERNOR.match(governor)):
        raise UsageError(f"{source}: governor: {governor!r} is not a cpufreq governor name (e.g. performance)")
    turbo = _bool(source, "turbo", raw.get("turbo"), nullable=True)
    kvm_params = raw.get("kvm_params") or {}
    if not isinstance(kvm_params, Mapping):
        raise UsageError(f"{source}: kvm_params: expected a mapping like {{kvm_intel: {{ple_gap: 0}}}}")
    norm_params: dict[str, dict[str, str]] = {}
    for module, params in kvm_params.items():
        if module not in KVM_MODULES:
            raise UsageError(f"{source}: kvm_params.{module}: unknown module; known: {', '.join(KVM_MODULES)}")
        if not isinstance(params, Mapping):
            raise UsageError(f"{source}: kvm_params.{module}: expected a mapping of parameter: value")
        for name, value in params.items():
            if not isinstance(value, (str, int, bool)) or not re.match(r"^\w+$", str(name)):
                raise UsageError(f"{source}: kvm_params.{module}.{name}: {value!r} is not a scalar value")
        norm_params[str(module)] = {str(k): _param_value(v) for k, v in params.items()}
    cmdline = raw.get("cmdline_add") or []
    if isinstance(cmdline, str) or not all(isinstance(a, str) and _CMDLINE_ARG.match(a) for a in cmdline):
        raise UsageError(f"{source}: cmdline_add: {cmdline!r} must be a list of kernel arguments like nosmt")
    return TuningKnobs(
        governor=governor,
        turbo=turbo,
        smt=_choice(source, "smt", raw.get("smt"), SMT_CHOICES),
        thp=_choice(source, "thp", raw.get("thp"), THP_CHOICES),
        irqbalance=_choice(source, "irqbalance", raw.get("irqbalance"), IRQBALANCE_CHOICES),
        kvm_params=norm_params,
        cmdline_add=tuple(cmdline),
        allow_reload=bool(_bool(source, "allow_reload", raw.get("allow_reload", False), nullable=False)),
        allow_reboot=bool(_bool(source, "allow_reboot", raw.get("allow_reboot", False), nullable=False)),
    )


def _plan_governor(facts: Mapping[str, Any], governor: str, writes: list, notes: list) -> None:
    policies = facts.get("cpufreq", {}).get("policies", {})
    if not policies:
        notes.append(Note("governor", "no cpufreq policies on this host (no cpufreq driver)"))
        return
    for name, policy in sorted(policies.items()):
        available = policy.get("available_governors") or []
        if available and governor not in available:
            notes.append(Note("governor", f"{name} does not offer {governor!r} (available: {' '.join(available)})"))
        elif policy.get("governor") != governor:
            path = f"{SYS_CPU}/cpufreq/{name}/scaling_governor"
            writes.append(SysfsWrite("governor", path, policy.get("governor"), governor))


def _plan_turbo(facts: Mapping[str, Any], turbo: bool, writes: list, notes: list) -> None:
    t = facts.get("turbo") or {}
    if t.get("interface") is None:
        notes.append(Note("turbo", "no intel_pstate/no_turbo or cpufreq/boost on this host"))
    elif t.get("enabled") != turbo:
        if t["interface"] == "intel_pstate":
            old, new = ("0", "1") if t.get("enabled") else ("1", "0")
        else:
            old, new = ("1", "0") if t.get("enabled") else ("0", "1")
        writes.append(SysfsWrite("turbo", t["path"], old, new))


def _plan_smt(facts: Mapping[str, Any], smt: str, writes: list, notes: list) -> None:
    control = (facts.get("smt") or {}).get("control")
    if control in SMT_CHOICES:
        if control != smt:
            writes.append(SysfsWrite("smt", SMT_CONTROL, control, smt))
    elif not (control == "forceoff" and smt == "off"):
        notes.append(Note("smt", f"SMT control is {control or 'absent'}; cannot switch SMT {smt}"))


def _plan_thp(facts: Mapping[str, Any], thp: str, writes: list, notes: list) -> None:
    t = facts.get("thp") or {}
    choices = t.get("enabled_choices") or []
    if t.get("enabled") is None or (choices and thp not in choices):
        notes.append(Note("thp", f"transparent hugepages cannot be set to {thp!r} here"))
    elif t["enabled"] != thp:
        writes.append(SysfsWrite("thp", THP_ENABLED, t["enabled"], thp))


def _plan_kvm(facts: Mapping[str, Any], knobs: TuningKnobs, notes: list, blocked: list) -> list[ModuleReload]:
    loaded = (facts.get("kvm") or {}).get("modules") or {}
    reloads = []
    for module, wanted in sorted(knobs.kvm_params.items()):
        if module not in loaded:
            notes.append(Note("kvm_params", f"module {module} is not loaded"))
            continue
        current = loaded[module]
        missing = sorted(p for p in wanted if p not in current)
        if missing:
            notes.append(Note("kvm_params", f"module {module} has no parameter {', '.join(missing)}"))
            continue
        differ = {p: v for p, v in wanted.items() if current[p] != v}
        if not differ:
            continue
        if not knobs.allow_reload:
            what = ", ".join(f"{module}.{p}={v}" for p, v in sorted(differ.items()))
            blocked.append(Note("kvm_params", f"{what} needs a module reload; set host_tuning_allow_reload: true"))
            continue
        dependents = tuple(m for m in ("kvm_intel", "kvm_amd") if module == "kvm" and m in loaded)
        reloads.append(ModuleReload(module, dict(wanted), {p: current[p] for p in wanted}, dependents))
    return reloads


def plan_tuning(facts: Mapping[str, Any], knobs: TuningKnobs) -> TuningPlan:
    """What to change on the host described by `facts` so that it matches `knobs`."""
    writes: list[SysfsWrite] = []
    notes: list[Note] = []
    blocked: list[Note] = []
    if knobs.governor is not None:
        _plan_governor(facts, knobs.governor, writes, notes)
    if knobs.turbo is not None:
        _plan_turbo(facts, knobs.turbo, writes, notes)
    if knobs.smt is not None:
        _plan_smt(facts, knobs.smt, writes, notes)
    if knobs.thp is not None:
        _plan_thp(facts, knobs.thp, writes, notes)
    stop: tuple[str, ...] = ()
    if knobs.irqbalance == "stopped":
        irq = facts.get("irqbalance") or {}
        if not irq.get("installed"):
            notes.append(Note("irqbalance", "irqbalance is not installed"))
        elif irq.get("running"):
            stop = ("irqbalance",)
    reloads = _plan_kvm(facts, knobs, notes, blocked)
    present = set(((facts.get("kernel") or {}).get("cmdline") or "").split())
    add = tuple(a for a in knobs.cmdline_add if a not in present)
    if add and not knobs.allow_reboot:
        blocked.append(Note("cmdline_add", f"adding {' '.join(add)} needs a reboot; set host_tuning_allow_reboot: true"))
        add = ()
    return TuningPlan(tuple(writes), stop, tuple(reloads), add, tuple(notes), tuple(blocked))


def merge_state(existing: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Add `new` previous values to a state file without overwriting the oldest (the true original) ones."""
    old = dict(existing or {})
    if old and old.get("version") != STATE_VERSION:
        raise UsageError(f"tuning state file version {old.get('version')!r} is not {STATE_VERSION}")
    sysfs = {**new.get("sysfs", {}), **old.get("sysfs", {})}
    services = list(dict.fromkeys([*old.get("services", []), *new.get("services", [])]))
    modules: dict[str, dict[str, str]] = {}
    for source in (new.get("modules", {}), old.get("modules", {})):
        for module, params in source.items():
            modules.setdefault(module, {}).update(params)
    cmdline = list(dict.fromkeys([*old.get("cmdline_add", []), *new.get("cmdline_add", [])]))
    return {"version": STATE_VERSION, "sysfs": sysfs, "services": services, "modules": modules,
            "cmdline_add": cmdline}


def load_tune_file(path: Path) -> dict[str, Any]:
    """Read and validate a --tune file; errors name the file."""
    text = read_text(Path(path), "tuning file")  # missing, directory, binary, not UTF-8: one line naming it
    data = parse_yaml(text, path, "a file of tuning knobs", invalid="cannot read tuning knobs") or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of knob: value")
    knobs_from_vars(data, str(path))
    return data
