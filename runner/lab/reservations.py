"""Holds on hosts shared by several controllers: two campaigns never measure on the same host at once.

A hold lives on the host itself, so controllers of different people on different machines see the same
holds without any central service. It is one small JSON file (owner `user@controller`, campaign, since,
TTL, a random token) whose modification time is the heartbeat. Every change runs as one short shell
script on the host (through `Host.run`) inside `flock` on the hold directory, so taking, refreshing,
releasing and taking over an expired hold are each an atomic compare-and-swap; the file itself is written
to a temporary name and renamed into place, so a reader never sees half a hold. The kernel drops the
flock when the script dies, so a lost connection never leaves the directory locked.

A hold expires when its heartbeat is older than its TTL, judged by the host's own clock (controllers'
clocks may disagree; the host's clock is the one both sides read). `hold_hosts` refreshes its holds
every TTL/4 from a background thread, so a crashed or SIGKILLed controller's holds expire after one TTL.

A trial confirms the hold on the host itself, in its own first command (HoldGuard: the command runs under a
`sh` that reads the hold file with a builtin and execs the command only if the hold still has our token),
so a hold released by force stops the next trial at once without any extra round trip per trial.

A relaunch does not wait for that TTL when the hold is its own: a hold records the controller machine and
the identity of the process that took it (PID, process start time, boot id; runner.hosts.process). A hold
of the same owner and campaign, taken on the same controller machine by a process that is gone, is taken
over at once (an atomic compare-and-swap on the old hold's token). A host the campaign drops mid-campaign
is released when it is dropped, or, if it does not answer then, at each heartbeat until it does.

The parts: runner.lab.holdfile (what a hold file holds), runner.lab.holds (the protocol on one host),
runner.lab.guard (the trial guard), runner.lab.heartbeat (a campaign's holds on all its hosts).

Where the hold file is (per host):
- the inventory variable `runner_hold_path` if set (a full path, read by load_inventory into
  HostSpec.hold_path), else
- `/var/lib/runner/holds/hold-net<inode>.json` (RUNNER_HOLD_DIR on the controller names another directory:
  every controller sharing the hosts must then name the same; the tests give each test its own), where <inode> is the host's network namespace
  (`stat -L -c %i /proc/self/ns/net`). On separate machines every host has its own file system and the
  name is simply fixed per machine, whatever name each controller's inventory gives the host. On the
  namespace test bed the hosts share one file system but each sshd runs in its own network namespace,
  so each test host still gets its own hold. All lab accounts that run campaigns must be able to write
  the directory (a group-writable directory, not a sticky one such as /tmp: taking over an expired hold
  replaces another user's file).
"""

from __future__ import annotations

from pathlib import Path

from runner.lab.guard import GUARD_RC, GuardedHost, HoldGuard
from runner.lab.heartbeat import HoldSet, hold_hosts
from runner.lab.holdfile import (
    DEFAULT_DIR,
    DEFAULT_TTL,
    HOLD_DIR_ENV,
    HOLD_PATH_VAR,
    HOLD_VERSION,
    HoldInfo,
    HoldLost,
    HostBusy,
    is_own_stale,
    hold_dir,
    parse_hold,
)
from runner.lab.holds import Hold, acquire, default_owner, force_release, status
from runner.provision.inventory import load_inventory


def hold_paths(inventory: Path | str) -> dict[str, str]:
    """host name -> its `runner_hold_path` inventory variable, for the hosts that set it (as load_inventory
    reads and checks it)."""
    return {name: spec.hold_path for name, spec in load_inventory(inventory).hosts.items() if spec.hold_path}


__all__ = [
    "DEFAULT_DIR", "DEFAULT_TTL", "GUARD_RC", "HOLD_DIR_ENV", "HOLD_PATH_VAR", "HOLD_VERSION", "GuardedHost", "Hold", "HoldGuard",
    "HoldInfo", "HoldLost", "HoldSet", "HostBusy", "acquire", "default_owner", "force_release", "hold_hosts",
    "hold_dir", "hold_paths", "is_own_stale", "parse_hold", "status",
]
