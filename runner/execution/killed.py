"""Why a workload was killed, in words (pure). A workload the kernel's OOM killer ends exits with status 137
(128 + SIGKILL; podman exec reports it so) or -9, usually without a word on its output: "workload exited with
status 137: no output" said nothing a user could act on.

The exit status alone does not say who sent the SIGKILL. Where the environment can count its guests' OOM
kills (a container's memory cgroup: Environment.oom_kills, read before and after the run), the line says
"out of memory" only when that count rose, and "not for memory" when it did not. Elsewhere (a virtual
machine, the bare host) a memory limit in force makes memory the likely cause, and the line says so with
"most likely"."""

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


def killed_for_memory(rc: int, params: Mapping[str, Any], stderr: str = "", oom_kills: int | None = None) -> str | None:
    """The failure line (after "workload ") of a workload ended by SIGKILL, or None for any other status.
    `oom_kills`: how many processes the OOM killer ended in the workload's memory cgroup during its run (None:
    not known)."""
    if rc not in SIGKILL_STATUSES:
        return None
    env = environments.get(str(params.get("env", defaults.ENV)))
    limit = memory_limit_mib(params)
    if oom_kills is not None:  # counted by the cgroup: a fact, not a guess
        if oom_kills > 0 and limit is not None:
            return (f"killed (SIGKILL, status {rc}): out of memory (limit {limit} MiB; the cgroup's OOM killer ended it); "
                    "give the environment more `memory`")
        if oom_kills > 0:
            return f"killed (SIGKILL, status {rc}): out of memory (no limit; the kernel's OOM killer ended it)"
        return (f"killed by SIGKILL (status {rc}), not for memory: the {env.guest_noun}'s memory cgroup counted no OOM kill; "
                "another process ended it")
    oom = "out of memory" in stderr.lower() or "oom" in stderr.lower().split()
    if limit is not None:
        return (f"killed (SIGKILL, status {rc}): out of memory (limit {limit} MiB){'' if oom else ', most likely'}; "
                "give the environment more `memory`")
    return f"killed (SIGKILL, status {rc}){': out of memory' if oom else ''}; the kernel's OOM killer or another process ended it"
