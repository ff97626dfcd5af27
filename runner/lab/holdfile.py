"""What a hold file is: its fields (HoldInfo), its versions, how its text is read, and the errors of holding.
The protocol that writes it is runner.lab.holds; runner.lab.reservations says where it lives."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runner.errors import RunnerError, UsageError
from runner.hosts.process import ProcessId

DEFAULT_TTL = 60.0
HOLD_PATH_VAR = "runner_hold_path"  # the inventory variable (read by runner.provision.inventory)
DEFAULT_DIR = "/var/lib/runner/holds"
HOLD_DIR_ENV = "RUNNER_HOLD_DIR"  # another directory for the default hold files (every controller must agree)
LOCK_WAIT_S = 10  # how long one operation waits for another controller's operation on the same host
# Hold file versions: 1: owner, campaign, since, ttl, token, pid; heartbeat = file mtime.
# 2: + controller (host name of the controller machine), pid_start, boot_id (the holder process's identity).
HOLD_VERSION = 2


@dataclass(frozen=True)
class HoldInfo:
    """A hold as found on a host. `age_s` is the time since its last heartbeat by the host's clock."""

    host: str
    path: str
    owner: str
    campaign: str
    since: str
    ttl: float
    token: str
    age_s: float
    pid: int | None = None
    controller: str | None = None  # host name of the controller machine (version 2)
    pid_start: int | None = None
    boot_id: str | None = None

    @property
    def expired(self) -> bool:
        return self.age_s > self.ttl

    @property
    def holder(self) -> ProcessId | None:
        """The process that took the hold (on `controller`), if the hold says."""
        return ProcessId(self.pid, self.pid_start, self.boot_id) if self.pid is not None else None

    def describe(self) -> str:
        """'held by alice@ctl1 for campaign nightly since 2026-11-26T02:00:00+00:00 (heartbeat 3 s ago)'."""
        state = f"expired {self.age_s - self.ttl:.0f} s ago" if self.expired else f"heartbeat {self.age_s:.0f} s ago"
        return f"held by {self.owner} for campaign {self.campaign} since {self.since} ({state})"


class HostBusy(RunnerError):
    """A host is held by another campaign. `holders` maps each busy host to its hold."""

    def __init__(self, message: str, holders: Mapping[str, HoldInfo]) -> None:
        super().__init__(message)
        self.holders = dict(holders)


class HoldLost(RunnerError):
    """Our hold is gone: it expired and another controller took the host, or it was released by force."""



def hold_dir() -> str:
    """The directory of the default hold files on every host: RUNNER_HOLD_DIR if set (a full path; tests give
    each test its own), else DEFAULT_DIR."""
    value = os.environ.get(HOLD_DIR_ENV, "").strip()
    if not value:
        return DEFAULT_DIR
    if not value.startswith("/") or any(c in value for c in "\n\0"):
        raise UsageError(f"{HOLD_DIR_ENV}={value!r}: not the full path of a directory")
    return value.rstrip("/") or "/"


def parse_hold(host: str, path: str, text: str, age_s: float) -> HoldInfo | None:
    """The HoldInfo of a hold file's text; None for no hold. An unreadable file counts as a hold of 'unknown'."""
    text = text.strip()
    if not text:
        return None
    try:
        doc = json.loads(text)
        return HoldInfo(
            host=host, path=path, owner=str(doc["owner"]), campaign=str(doc["campaign"]), since=str(doc["since"]),
            ttl=float(doc["ttl"]), token=str(doc["token"]), age_s=float(age_s), pid=_int_or_none(doc.get("pid")),
            controller=_str_or_none(doc.get("controller")), pid_start=_int_or_none(doc.get("pid_start")),
            boot_id=_str_or_none(doc.get("boot_id")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return HoldInfo(host, path, "unknown", "unknown", "unknown", DEFAULT_TTL, "", float(age_s))


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def is_own_stale(info: HoldInfo, owner: str, campaign: str, controller: str, gone: Callable[[ProcessId], bool]) -> bool:
    """Whether `info` is a hold of `owner` for `campaign`, taken on this controller machine (`controller`) by
    a process that is gone (`gone`, asked only then): ours to take over at once. Pure but for `gone`."""
    holder = info.holder
    return (
        holder is not None and info.owner == owner and info.campaign == campaign and info.controller == controller
        and gone(holder)
    )



def lost_reason(host: str, campaign: str, now: HoldInfo | str | None) -> str:
    other = now.describe() if isinstance(now, HoldInfo) else now or "released (by force?)"
    return f"host {host}: our hold for campaign {campaign} was lost; now {other}"


