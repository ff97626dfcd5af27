"""What host tuning would change: the role host_tuning's pure decisions, and the --tune file.

The decisions live in the collection's filter plugin, playbooks/plugins/filter/host_tuning.py
(standard library only, so that the roles work as an Ansible collection without the runner); this module loads
that file and turns its errors into UsageError. See that file for the knobs and the state file's versions.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from runner.errors import UsageError
from runner.textfile import load_yaml, read_text

RULES = Path(__file__).resolve().parents[2] / "playbooks" / "plugins" / "filter" / "host_tuning.py"


def _load_rules() -> ModuleType:
    name = "runner.provision._host_tuning_rules"
    spec = importlib.util.spec_from_file_location(name, RULES)
    assert spec is not None and spec.loader is not None, RULES
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_rules = sys.modules.get("runner.provision._host_tuning_rules") or _load_rules()
STATE_VERSION = _rules.STATE_VERSION
PREFIX = _rules.PREFIX
KNOWN_KNOBS = _rules.KNOWN_KNOBS
TuningKnobs = _rules.TuningKnobs
SysfsWrite = _rules.SysfsWrite
ModuleReload = _rules.ModuleReload
Note = _rules.Note
TuningPlan = _rules.TuningPlan
plan_tuning = _rules.plan_tuning


def knobs_from_vars(values: Mapping[str, Any], source: str = "tuning") -> TuningKnobs:
    """Validate knobs given as `host_tuning_*` variables or short names; `source` prefixes messages."""
    try:
        return _rules.knobs_from_vars(values, source)
    except _rules.TuningError as exc:
        raise UsageError(str(exc)) from None


def merge_state(existing: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Add `new` previous values to a state file without overwriting the oldest (the true original) ones."""
    try:
        return _rules.merge_state(existing, new)
    except _rules.TuningError as exc:
        raise UsageError(str(exc)) from None


def load_tune_file(path: Path) -> dict[str, Any]:
    """Read and validate a --tune file; errors name the file."""
    text = read_text(Path(path), "tuning file")  # missing, directory, special, oversized, binary, not UTF-8: one line
    # bad or hostile YAML (duplicate keys, alias bombs, NaN): one line naming the file
    data = load_yaml(text, path, "file of tuning knobs", syntax="cannot read tuning knobs") or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of knob: value")
    knobs_from_vars(data, str(path))
    return data
