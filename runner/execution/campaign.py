"""A campaign, as callers see it: `launch` (or resume) one, its `Progress` and `Summary`, and the checks
`runner plan` shares with it. The work is done by one module per job:

- runner.execution.preflight   which inventory and hosts; guest checks, what each host can run, before any trial
- runner.execution.facts       host facts before and after, and what changed
- runner.execution.launch      lock, holds, plan, provenance, summary
- runner.execution.dispatch    the Dask loop that keeps every host busy and records every attempt
- runner.execution.placement   placement each/pool, which hosts take which environments, estimates, work dirs
- runner.execution.stall       why nothing moves, asked of the scheduler
"""

from __future__ import annotations

from runner.errors import RunnerError
from runner.execution.dispatch import Dispatch, Progress
from runner.execution.dispatch import preferred_workers as _preferred
from runner.execution.facts import collect_all, collect_facts, describe_changes, fact_changes
from runner.execution.launch import LaunchContext, Summary, git_commit, launch
from runner.execution.placement import WORKDIR_ROOT, Placement, workdir_for
from runner.execution.preflight import PROJECT_ROOT, check_guests, check_host_tools, inventory_path, resolve_hosts
from runner.execution.stall import stall_reason

_Dispatch = Dispatch  # the name tests use

__all__ = [
    "PROJECT_ROOT", "WORKDIR_ROOT", "Dispatch", "LaunchContext", "Placement", "Progress", "RunnerError", "Summary",
    "_Dispatch", "_preferred", "check_guests", "check_host_tools", "collect_all", "collect_facts", "describe_changes",
    "fact_changes", "git_commit", "inventory_path", "launch", "resolve_hosts", "stall_reason", "workdir_for",
]
