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

Where the hold file is (per host):
- the inventory variable `runner_hold_path` if set (a full path), else
- `/var/lib/runner/holds/hold-net<inode>.json`, where <inode> is the host's network namespace
  (`stat -L -c %i /proc/self/ns/net`). On separate machines every host has its own file system and the
  name is simply fixed per machine, whatever name each controller's inventory gives the host. On the
  namespace test bed the hosts share one file system but each sshd runs in its own network namespace,
  so each test host still gets its own hold. All lab accounts that run campaigns must be able to write
  the directory (a group-writable directory, not a sticky one such as /tmp: taking over an expired hold
  replaces another user's file).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import math
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import HostError, RunnerError, UsageError
from runner.hosts import process
from runner.hosts.base import CommandResult, Host, Spawned
from runner.hosts.process import ProcessId

DEFAULT_TTL = 60.0
HOLD_PATH_VAR = "runner_hold_path"
DEFAULT_DIR = "/var/lib/runner/holds"
LOCK_WAIT_S = 10  # how long one operation waits for another controller's operation on the same host
# Hold file versions: 1: owner, campaign, since, ttl, token, pid; heartbeat = file mtime.
# 2: + controller (host name of the controller machine), pid_start, boot_id (the holder process's identity).
HOLD_VERSION = 2

# One script for every operation. Output: "<STATE> <host now> <hold mtime> <path>" then the hold's JSON.
# STATE: OK (done), BUSY (held by another, not expired), LOST (not ours any more), ERROR (message follows).
# acquire with `expect` (a token): also replace a live hold whose token is `expect` (the takeover of our own
# hold left by a process that is gone); if the hold changed meanwhile, BUSY.
_SCRIPT = r"""
op=$1 path=$2 token=$3 ttl=$4 doc=$5 expect=$6
if [ -z "$path" ]; then
  ino=$(stat -L -c %i /proc/self/ns/net) || { echo "ERROR cannot read /proc/self/ns/net"; exit 0; }
  path=DEFAULT_DIR/hold-net$ino.json
fi
dir=$(dirname "$path")
report() {
  mtime=0; cur=""
  if [ -f "$path" ]; then
    mtime=$(stat -c %Y "$path" 2>/dev/null || echo 0); cur=$(cat "$path" 2>/dev/null || true)
  fi
  echo "$1 $(date +%s) $mtime $path"; printf '%s\n' "$cur"
}
if [ "$op" = status ]; then report OK; exit 0; fi
mkdir -p "$dir" 2>/dev/null || { echo "ERROR cannot create hold directory $dir"; exit 0; }
exec 9<"$dir" || { echo "ERROR cannot open hold directory $dir"; exit 0; }
flock -w LOCK_WAIT 9 || { echo "ERROR hold directory $dir stayed locked for LOCK_WAIT s"; exit 0; }
cur=""; mine=0; stale=0; age=0; theirs=$ttl
if [ -f "$path" ]; then
  cur=$(cat "$path")
  age=$(( $(date +%s) - $(stat -c %Y "$path") ))
  case "$cur" in *"\"token\": \"$token\""*) mine=1;; esac
  if [ -n "$expect" ]; then case "$cur" in *"\"token\": \"$expect\""*) stale=1;; esac; fi
  t=$(printf '%s' "$cur" | sed -n 's/.*"ttl": \([0-9][0-9]*\).*/\1/p')
  [ -n "$t" ] && theirs=$t
fi
case "$op" in
acquire)
  if [ -n "$cur" ] && [ $mine = 0 ] && [ $stale = 0 ] && [ $age -le $theirs ]; then report BUSY; exit 0; fi
  tmp="$path.$token.tmp"
  printf '%s\n' "$doc" > "$tmp" && mv -f "$tmp" "$path" || { rm -f "$tmp"; echo "ERROR cannot write $path"; exit 0; }
  report OK;;
refresh)
  if [ $mine = 1 ]; then touch "$path" && report OK; else report LOST; fi;;
release)
  if [ $mine = 1 ]; then rm -f "$path"; fi; report OK;;
force)
  report OK; rm -f "$path";;
esac
""".replace("DEFAULT_DIR", DEFAULT_DIR).replace("LOCK_WAIT", str(LOCK_WAIT_S))


# HoldGuard: run "$@" only while the hold file $1 (one line: json.dumps, no newline inside) has token $2, read
# by the shell itself (no lock, no write, no other process); else say what the file has now and exit GUARD_RC.
GUARD_RC = 86
_GUARD_MARK = "runner-hold-lost"
_GUARD = (
    r'''IFS= read -r hold 2>/dev/null < "$1"; case "$hold" in *"\"token\": \"$2\""*) shift 2; exec "$@";; esac; '''
    f"printf '{_GUARD_MARK} %s: %s\\n' \"$2\" \"$hold\" >&2; exit {GUARD_RC}"
)


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


@dataclass(frozen=True)
class _Answer:
    state: str
    path: str
    info: HoldInfo | None


def default_owner() -> str:
    """`user@controller` of this process."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _call(host: Host, op: str, path: str | None, token: str = "", ttl: int = 0, doc: str = "", expect: str = "") -> _Answer:
    argv = ["sh", "-c", _SCRIPT, "hold", op, path or "", token, str(ttl), doc, expect]
    result = host.run(argv, timeout=LOCK_WAIT_S + 20)
    lines = result.stdout.splitlines()
    if not result.ok or not lines:
        why = (result.stderr.strip() or f"exit {result.rc}").splitlines()[-1]
        raise HostError(f"host {host.name}: hold {op} failed: {why}")
    head = lines[0].split(" ", 3)
    if head[0] == "ERROR":
        raise HostError(f"host {host.name}: hold {op}: {lines[0][6:]}")
    state, now, mtime, where = head[0], int(head[1]), int(head[2]), head[3]
    return _Answer(state, where, parse_hold(host.name, where, "\n".join(lines[1:]), now - mtime))


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


class Hold:
    """A hold we own on one host. Refresh it more often than its TTL; release it when done.
    `took_over`: the hold of our own gone process that this one replaced, if any."""

    def __init__(self, host: Host, path: str, token: str, info: HoldInfo, took_over: HoldInfo | None = None) -> None:
        self.host = host
        self.path = path
        self.token = token
        self.info = info
        self.took_over = took_over

    def refresh(self) -> None:
        """Renew the heartbeat. Raises HoldLost if the hold is no longer ours."""
        answer = _call(self.host, "refresh", self.path, self.token)
        if answer.state != "OK":
            raise HoldLost(self._lost(answer.info))

    def check(self) -> str | None:
        """Whether the hold is still ours, read on the host now: None if it is, else why not (the HoldGuard
        of `true`); raises HostError if the host does not answer."""
        return self.guard().check(self.host)

    def guard(self) -> HoldGuard:
        """What a trial's first command checks on the host (plain data, for a Dask worker)."""
        return HoldGuard(self.host.name, self.info.campaign, self.path, self.token)

    def _lost(self, now: HoldInfo | str | None) -> str:
        return _lost_reason(self.host.name, self.info.campaign, now)

    def release(self) -> None:
        """Remove the hold if it is still ours (a hold taken over by someone else is left alone)."""
        _call(self.host, "release", self.path, self.token)


def _lost_reason(host: str, campaign: str, now: HoldInfo | str | None) -> str:
    other = now.describe() if isinstance(now, HoldInfo) else now or "released (by force?)"
    return f"host {host}: our hold for campaign {campaign} was lost; now {other}"


CHECK_TIMEOUT_S = LOCK_WAIT_S + 20


@dataclass(frozen=True)
class HoldGuard:
    """A campaign's hold on one host as a trial confirms it on the host itself: the hold file at `path` still
    has our `token`. Plain data: it travels with the trial to the Dask worker, which runs the trial's first
    command on the host under it (`wrap`), so confirming the hold costs no command of its own."""

    host: str
    campaign: str
    path: str
    token: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        """argv, run only while the hold is ours; else nothing runs and the command exits GUARD_RC (see lost)."""
        return ["sh", "-c", _GUARD, _GUARD_MARK, self.path, self.token, *argv]

    def lost(self, result: CommandResult) -> str | None:
        """None if the guarded command ran (the hold was ours when it started), else why the hold is lost."""
        if result.rc != GUARD_RC:
            return None
        mark = f"{_GUARD_MARK} {self.token}: "
        for line in result.stderr.splitlines():
            if line.startswith(mark):
                info = parse_hold(self.host, self.path, line[len(mark):], 0.0)
                return _lost_reason(self.host, self.campaign, info and f"held by {info.owner} for campaign {info.campaign} since {info.since}")
        return None

    def check(self, host: Host) -> str | None:
        """The guard on its own (`true` under it): None while the hold is ours, else why not; HostError if the
        host does not answer."""
        result = host.run(self.argv(["true"]), timeout=CHECK_TIMEOUT_S)
        why = self.lost(result)
        if why is None and not result.ok:
            raise HostError(f"host {self.host}: hold check failed: {result.tail()}")
        return why

    def wrap(self, host: Host) -> GuardedHost:
        """`host` for one trial: its first command runs under the guard (see GuardedHost)."""
        return GuardedHost(host, self)


class GuardedHost(Host):
    """A trial's host whose first command confirms the campaign's hold (HoldGuard) as part of itself. Until a
    guarded command has run, every command is guarded, and put/spawn/open_channel first run the guard on its
    own; once the hold is confirmed, commands go to the host as they are. A hold found lost raises HoldLost,
    from then on for every call: nothing of the trial runs on the host. `close` leaves the host open (its
    owner, the worker's connection cache, closes it)."""

    def __init__(self, host: Host, guard: HoldGuard) -> None:
        self.name = host.name
        self.inner = host
        self.hold = guard
        self._ours = False
        self._lost: str | None = None

    @property
    def is_local(self) -> bool:
        return self.inner.is_local

    def confirm(self) -> None:
        """The guard on its own, unless a guarded command ran already; HoldLost if the hold is not ours."""
        if self._lost is not None:
            raise HoldLost(self._lost)
        if not self._ours:
            self._lost = self.hold.check(self.inner)
            if self._lost is not None:
                raise HoldLost(self._lost)
            self._ours = True

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        if self._lost is not None:
            raise HoldLost(self._lost)
        if self._ours:
            return self.inner.run(argv, timeout=timeout, cwd=cwd, env=env)
        result = self.inner.run(self.hold.argv(argv), timeout=timeout, cwd=cwd, env=env)
        why = self.hold.lost(result)
        if why is not None:
            self._lost = why
            raise HoldLost(why)
        self._ours = True
        return dataclasses.replace(result, argv=tuple(argv))

    def put(self, local: Path, remote: str) -> None:
        self.confirm()
        self.inner.put(local, remote)

    def open_channel(self, address: str, port: int, timeout: float = 10.0) -> Any:
        self.confirm()
        return self.inner.open_channel(address, port, timeout)

    def spawn(self, argv: Sequence[str]) -> Spawned:
        self.confirm()
        return self.inner.spawn(argv)

    def __getattr__(self, name: str) -> Any:  # e.g. an SSH host's `spec`
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def acquire(
    host: Host,
    owner: str,
    campaign: str,
    ttl: float = DEFAULT_TTL,
    *,
    path: str | None = None,
    gone: Callable[[ProcessId], bool] = process.gone,
) -> Hold:
    """Hold `host` for `campaign`, or raise HostBusy naming the current holder. An expired hold is taken over,
    and so is a live one of the same owner and campaign whose process on this controller machine is `gone`."""
    if ttl < 1:
        raise UsageError(f"hold TTL {ttl!r} must be at least 1 second")
    seconds = math.ceil(ttl)
    token = secrets.token_hex(8)
    since = datetime.now(UTC).isoformat(timespec="seconds")
    me = process.current()
    controller = socket.gethostname()
    doc = {
        "version": HOLD_VERSION, "owner": owner, "campaign": campaign, "since": since, "ttl": seconds, "token": token,
        "pid": me.pid, "pid_start": me.start, "boot_id": me.boot, "controller": controller,
    }
    text = json.dumps(doc, sort_keys=True)
    answer = _call(host, "acquire", path, token, seconds, text)
    took_over = None
    if answer.state == "BUSY" and answer.info is not None and _TOKEN.fullmatch(answer.info.token) \
            and is_own_stale(answer.info, owner, campaign, controller, gone):
        took_over = answer.info
        answer = _call(host, "acquire", path, token, seconds, text, expect=took_over.token)
    if answer.state == "BUSY" and answer.info is not None:
        raise HostBusy(f"host {host.name} is {answer.info.describe()}", {host.name: answer.info})
    info = answer.info or HoldInfo(host.name, answer.path, owner, campaign, since, seconds, token, 0.0)
    return Hold(host, path or answer.path, token, info, took_over)


_TOKEN = re.compile(r"[0-9a-f]{1,64}")


def status(host: Host, *, path: str | None = None) -> HoldInfo | None:
    """The hold on `host`, expired or not; None if it is free."""
    return _call(host, "status", path).info


def force_release(host: Host, *, path: str | None = None) -> HoldInfo | None:
    """Remove whatever hold `host` has (an administrator's tool); returns the hold that was removed."""
    return _call(host, "force", path).info


@dataclass
class HoldSet:
    """The holds of one campaign: `held` host name -> Hold, `skipped` host name -> the other campaign's hold."""

    held: dict[str, Hold] = field(default_factory=dict)
    skipped: dict[str, HoldInfo] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # host -> why, filled by the heartbeat
    abandoned: set[str] = field(default_factory=set)
    dropped: dict[str, Hold] = field(default_factory=dict)  # host -> its hold, until the release gets through
    every: float = DEFAULT_TTL / 4  # seconds between heartbeats, and between tries to release a dropped host
    guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    taken: dict[str, Hold] = field(default_factory=dict)  # host -> the last hold taken there, lost or not

    def abandon(self, name: str) -> None:
        """Stop heartbeating a host that went away, without contacting it: its hold expires after the TTL."""
        self.abandoned.add(name)

    def trial_guard(self, name: str) -> HoldGuard | None:
        """What each trial on `name` confirms on the host as part of its first command (HoldGuard); None for
        a host this set never held. A hold lost meanwhile keeps its guard: a trial sent there finds it lost."""
        with self.guard:
            hold = self.taken.get(name)
        return hold.guard() if hold is not None else None

    def confirm(self, name: str) -> str | None:
        """Whether our hold on `name` is still ours, read on the host now (Hold.check): None if it is, else why
        not; a lost hold moves from `held` to `lost` at once (no more heartbeat, never released: it is not
        ours). None too for a host not held by this set, or one that does not answer."""
        with self.guard:
            if name in self.lost:
                return self.lost[name]
            hold = self.held.get(name)
        if hold is None:
            return None
        try:
            why = hold.check()
        except HostError:
            return None
        if why is None:
            return None
        with self.guard:
            if self.held.get(name) is hold:
                del self.held[name]
            return self.lost.setdefault(name, why)

    def drop(self, name: str) -> None:
        """The campaign stopped using host `name`: stop its heartbeat and release its hold now, in the
        background (this returns at once); a host that does not answer is tried again every `every` seconds
        until it does or the campaign ends (then its hold expires after the TTL)."""
        with self.guard:
            hold = self.held.pop(name, None)
            if hold is None:
                return
            self.dropped[name] = hold
        threading.Thread(target=_release_dropped, args=(self, name, hold), daemon=True, name=f"runner-drop-{name}").start()


def _release_dropped(holds: HoldSet, name: str, hold: Hold) -> None:
    while True:
        try:
            hold.release()
        except Exception:  # noqa: BLE001 - unreachable, or its connection closed at the campaign's end: try again
            if holds.stop.wait(holds.every):
                return
            continue
        with holds.guard:
            holds.dropped.pop(name, None)
        return


def _connect(spec: Any) -> Host:
    if isinstance(spec, Host):
        return spec
    from runner.provision.inventory import connect

    return connect(spec)


@contextmanager
def hold_hosts(
    hosts: Sequence[Any],
    owner: str | None,
    campaign: str,
    *,
    wait: bool = True,
    timeout: float | None = None,
    ttl: float = DEFAULT_TTL,
    paths: Mapping[str, str] | None = None,
    on_wait: Callable[[str], None] | None = None,
    on_lost: Callable[[str], None] | None = None,
    poll_s: float | None = None,
) -> Iterator[HoldSet]:
    """Hold `hosts` (HostSpecs or Hosts) for the life of the block, with heartbeats every TTL/4.

    wait=True: all or nothing. While any host is busy, release what we took (no hold-and-wait, so two
    campaigns never deadlock), tell `on_wait` why, and try again after a random pause; HostBusy after
    `timeout` seconds (None: wait for ever). wait=False: hold the free hosts, skip the busy ones
    (`HoldSet.skipped`); HostBusy if every host is busy. A hold lost later is reported to `on_lost` and
    listed in `HoldSet.lost`. `paths` maps host names to `runner_hold_path` values (see hold_paths).
    """
    owner = owner or default_owner()
    paths = paths or {}
    poll = poll_s if poll_s is not None else min(ttl / 4, 5.0)
    conns = {h.name: _connect(h) for h in hosts}
    ours = [h.name for h in hosts if not isinstance(h, Host)]  # connections we opened, we close
    holds = HoldSet(every=ttl / 4)
    stop, guard = holds.stop, holds.guard
    deadline = None if timeout is None else time.monotonic() + timeout
    beat: threading.Thread | None = None
    try:
        while True:
            busy: dict[str, HoldInfo] = {}
            todo = [name for name in sorted(conns) if name not in holds.held]
            for name, hold in _acquire_all(todo, conns, owner, campaign, ttl, paths, holds):
                if isinstance(hold, HostBusy):
                    busy.update(hold.holders)
                    continue
                if hold.took_over is not None and on_wait:
                    old = hold.took_over
                    on_wait(f"host {name}: took over the hold of campaign {old.campaign} from process {old.pid} "
                            f"on {old.controller}, which is gone")
            if beat is None and holds.held:
                beat = threading.Thread(target=_heartbeat, args=(holds, guard, stop, ttl / 4, on_lost), daemon=True, name="runner-holds")
                beat.start()
            if not busy:
                break
            if not wait:
                if not holds.held:
                    raise HostBusy(_busy_message(busy), busy)
                holds.skipped = busy
                for name, info in sorted(busy.items()):
                    if on_wait:
                        on_wait(f"skipping host {name}: {info.describe()}")
                break
            _release_all(holds, guard)
            if deadline is not None and time.monotonic() >= deadline:
                raise HostBusy(f"gave up after {timeout:g} s: {_busy_message(busy)}", busy)
            if on_wait:
                for name, info in sorted(busy.items()):
                    on_wait(f"waiting for host {name}: {info.describe()}")
            pause = poll * random.uniform(0.5, 1.5)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
        yield holds
    finally:
        stop.set()
        if beat is not None:
            beat.join(timeout=RELEASE_WAIT_S)  # a beat stuck on a vanished host must not hold us up
        _release_all(holds, guard)
        for name in ours:
            conns[name].close()


ACQUIRE_THREADS = 16  # hosts whose holds are taken at once (each: connect, then one short command)


def _acquire_all(
    names: Sequence[str], conns: Mapping[str, Host], owner: str, campaign: str, ttl: float, paths: Mapping[str, str],
    holds: HoldSet,
) -> list[tuple[str, Hold | HostBusy]]:
    """Try to hold every host in `names` at once (in parallel); each hold taken goes into `holds.held` before
    this returns or raises, so a failure elsewhere never leaves one behind unreleased. (name, Hold or the
    HostBusy that says who holds it) in the order of `names`; the first other error is raised after all ended."""
    if not names:
        return []

    def one(name: str) -> Hold | HostBusy:
        try:
            hold = acquire(conns[name], owner, campaign, ttl, path=paths.get(name))
        except HostBusy as exc:
            return exc
        with holds.guard:
            holds.held[name] = holds.taken[name] = hold
        return hold

    with ThreadPoolExecutor(max_workers=min(ACQUIRE_THREADS, len(names)), thread_name_prefix="runner-hold") as pool:
        futures = [(name, pool.submit(one, name)) for name in names]
    out, errors = [], []
    for name, future in futures:
        try:
            out.append((name, future.result()))
        except Exception as exc:  # noqa: BLE001 - raised below, once every host's attempt has ended
            errors.append(exc)
    if errors:
        raise errors[0]
    return out


def _busy_message(busy: Mapping[str, HoldInfo]) -> str:
    return "; ".join(f"host {n} is {i.describe()}" for n, i in sorted(busy.items()))


RELEASE_WAIT_S = 10.0


def _release_all(holds: HoldSet, guard: threading.Lock) -> None:
    """Release every hold at once; a host that does not answer within RELEASE_WAIT_S keeps its hold until the TTL."""
    with guard:
        taken, holds.held = holds.held, {}

    def release(hold: Hold) -> None:
        try:
            hold.release()
        except HostError:
            pass  # unreachable: the hold expires after its TTL

    threads = [
        threading.Thread(target=release, args=(hold,), daemon=True, name=f"runner-release-{name}")
        for name, hold in taken.items()
        if name not in holds.abandoned
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + RELEASE_WAIT_S
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))


def _heartbeat(holds: HoldSet, guard: threading.Lock, stop: threading.Event, every: float, on_lost: Callable[[str], None] | None) -> None:
    while not stop.wait(every):
        with guard:
            current = list(holds.held.items())
        for name, hold in current:
            if name in holds.abandoned:
                continue
            try:
                hold.refresh()
            except HoldLost as exc:
                with guard:
                    holds.held.pop(name, None)
                    holds.lost[name] = str(exc)
                if on_lost:
                    on_lost(str(exc))
            except HostError:
                pass  # try again next beat; if the host stays away past the TTL the hold is lost then


def hold_paths(inventory: Path | str) -> dict[str, str]:
    """host name -> its `runner_hold_path` inventory variable, for the hosts that set it."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    source = Path(inventory).resolve()
    if not source.exists():
        raise UsageError(f"inventory {inventory} does not exist")
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(source)])
    variables = VariableManager(loader=loader, inventory=manager)
    out = {}
    for name, host in manager.hosts.items():
        hostvars = variables.get_vars(host=host, include_hostvars=False)
        if hostvars.get(HOLD_PATH_VAR):
            out[name] = str(Templar(loader=loader, variables=hostvars).template(hostvars[HOLD_PATH_VAR]))
    return out
