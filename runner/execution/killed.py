"""Why a workload was killed, in words (pure). A workload the kernel's OOM killer ends exits with status 137
(128 + SIGKILL; podman exec reports it so) or -9, usually without a word on its output: "workload exited with
status 137: no output" said nothing a user could act on. With a memory limit in force (a container's or a
guest's `memory`), the line names the limit and what to change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner import defaults
from runner.provision import environments

SIGKILL_STATUSES = (137, -9)


def memory_limit_mib(params: Mapping[str, Any]) -> int | None:
    """The memory limit a trial runs under, as its environment says (None on the bare host or in a container
    without one)."""
    return environments.get(str(params.get("env", defaults.ENV))).memory_limit_mib(params)


def killed_for_memory(rc: int, params: Mapping[str, Any], stderr: str = "") -> str | None:
    """The failure line (after "workload ") of a workload ended by SIGKILL, or None for any other status."""
    if rc not in SIGKILL_STATUSES:
        return None
    limit = memory_limit_mib(params)
    oom = "out of memory" in stderr.lower() or "oom" in stderr.lower().split()
    if limit is not None:
        return (f"killed (SIGKILL, status {rc}): out of memory (limit {limit} MiB){'' if oom else ', most likely'}; "
                "give the environment more `memory`")
    return f"killed (SIGKILL, status {rc}){': out of memory' if oom else ''}; the kernel's OOM killer or another process ended it"
