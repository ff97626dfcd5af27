"""Processes of this machine, named so that a PID reused after a crash is not taken for the process that died.

A process is (boot id, PID, start time): the start time is field 22 of /proc/PID/stat (clock ticks after
boot), the boot id is /proc/sys/kernel/random/boot_id. A campaign's holds and its dataset lock record the
identity of the controller that took them; a later controller on the same machine asks `gone()` whether that
process still runs: no process with that PID, another start time, or another boot means it is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from runner.util import proc_state

PROC = Path("/proc")
BOOT_ID = PROC / "sys/kernel/random/boot_id"


@dataclass(frozen=True)
class ProcessId:
    """One process of one boot of this machine. `start`/`boot` None: not known (not Linux, or not recorded)."""

    pid: int
    start: int | None = None
    boot: str | None = None


def stat_start(stat: str) -> int:
    """The start time (field 22) of a /proc/PID/stat line. The command name (field 2) may hold spaces and
    parentheses, so fields are counted after its last ')'. Pure; ValueError on a malformed line."""
    head, sep, rest = stat.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 20:
        raise ValueError(f"not a /proc/PID/stat line: {stat[:60]!r}")
    return int(fields[19])  # fields[0] is field 3 (state)


def boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def identify(pid: int) -> ProcessId | None:
    """The identity of process `pid` now; None if there is no such process."""
    if pid <= 0:
        return None
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        if proc_state(stat) in ("Z", "X", "x"):  # a zombie has ended (util.alive)
            return None
        return ProcessId(pid, stat_start(stat), boot_id())
    except FileNotFoundError:
        if PROC.joinpath("self").exists():
            return None  # /proc is there: no such process
    except (OSError, ValueError):
        pass
    try:  # no /proc: only whether the PID exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # exists, another user's
    return ProcessId(pid)


def current() -> ProcessId:
    """This process."""
    return identify(os.getpid()) or ProcessId(os.getpid())


def is_gone(recorded: ProcessId, found: ProcessId | None, this_boot: str | None) -> bool:
    """Whether the process `recorded` earlier has ended, given what runs under its PID now (`found`, None for
    nothing) and this machine's boot id. Unknown parts (None) never count as a difference. Pure."""
    if recorded.boot and this_boot and recorded.boot != this_boot:
        return True
    if found is None:
        return True
    return recorded.start is not None and found.start is not None and recorded.start != found.start


def gone(recorded: ProcessId) -> bool:
    """Whether the process `recorded` (on this machine) has ended."""
    return is_gone(recorded, identify(recorded.pid), boot_id())
