"""Filters host_tuning_plan and host_tuning_merge_state: the role's decisions, from runner.provision.tuning.

They run on the controller, inside ansible-playbook's Python (the project's venv); when the runner package
is not installed there, the project root (four directories up) is put on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    from runner.errors import UsageError
    from runner.provision import tuning
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
    from runner.errors import UsageError
    from runner.provision import tuning


def host_tuning_plan(facts: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
    """The plan (TuningPlan.to_dict()) for a host's facts and the role's knob variables."""
    try:
        return tuning.plan_tuning(facts, tuning.knobs_from_vars(knobs, "host_tuning")).to_dict()
    except UsageError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def host_tuning_merge_state(existing: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Merge new previous values into the state file, keeping the oldest ones."""
    try:
        return tuning.merge_state(existing, new)
    except UsageError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"host_tuning_plan": host_tuning_plan, "host_tuning_merge_state": host_tuning_merge_state}
