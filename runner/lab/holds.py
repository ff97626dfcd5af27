"""The hold protocol: take, refresh, release, read and force a hold on one host.

Every change runs as one short shell script on the host (through `Host.run`) inside `flock` on the hold
directory, so taking, refreshing, releasing and taking over an expired hold are each an atomic compare-and-swap;
the file itself is written to a temporary name and renamed into place, so a reader never sees half a hold.
The kernel drops the flock when the script dies, so a lost connection never leaves the directory locked.
A path that names anything but a hold file (a config, a directory, a device) is refused and left untouched.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import socket
import getpass
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from runner.errors import HostError, UsageError
from runner.hosts import process
from runner.hosts.base import Host
from runner.hosts.process import ProcessId
from runner.lab.guard import HoldGuard
from runner.lab.holdfile import (
    DEFAULT_TTL,
    HOLD_VERSION,
    LOCK_WAIT_S,
    HoldInfo,
    HoldLost,
    HostBusy,
    hold_dir,
    is_own_stale,
    lost_reason,
    parse_hold,
)


# One script for every operation. Output: "<STATE> <host now> <hold mtime> <path>" then the hold's JSON.
# STATE: OK (done), BUSY (held by another, not expired), LOST (not ours any more), ERROR (message follows),
# REFUSED (the path names something that is not a hold file: a config, a directory, a link; message follows).
# acquire with `expect` (a token): also replace a live hold whose token is `expect` (the takeover of our own
# hold left by a process that is gone); if the hold changed meanwhile, BUSY.
MAX_HOLD_BYTES = 4096  # a hold file is one JSON line of about 300 bytes
_SCRIPT = r"""
op=$1 path=$2 token=$3 ttl=$4 doc=$5 expect=$6 holddir=$7
if [ -z "$path" ]; then
  ino=$(stat -L -c %i /proc/self/ns/net) || { echo "ERROR cannot read /proc/self/ns/net"; exit 0; }
  path=$holddir/hold-net$ino.json
fi
dir=$(dirname "$path")
report() {
  mtime=0; cur=""
  if [ -f "$path" ]; then
    mtime=$(stat -c %Y "$path" 2>/dev/null || echo 0); cur=$(cat "$path" 2>/dev/null || true)
  fi
  echo "$1 $(date +%s) $mtime $path"; printf '%s\n' "$cur"
}
refuse() { echo "REFUSED $path: $1, not a hold file; left untouched (runner_hold_path must name a file of its own)"; exit 0; }
holdfile() {
  if [ -L "$path" ]; then refuse "a symbolic link"; fi
  if [ -e "$path" ] && [ ! -f "$path" ]; then refuse "not a regular file"; fi
  [ -f "$path" ] || return 0
  size=$(stat -c %s "$path" 2>/dev/null) || return 0  # released meanwhile (status takes no lock): no hold
  [ "$size" -le MAX_HOLD ] || refuse "larger than any hold file"
  c=$(cat "$path" 2>/dev/null) || return 0
  case "$c" in '{'*'"owner": "'*'"token": "'*'}') ;; *) [ -e "$path" ] || return 0; refuse "a file of other content";; esac
}
if [ "$op" = status ]; then holdfile; report OK; exit 0; fi
mkdir -p "$dir" 2>/dev/null || { echo "ERROR cannot create hold directory $dir"; exit 0; }
exec 9<"$dir" || { echo "ERROR cannot open hold directory $dir"; exit 0; }
flock -w LOCK_WAIT 9 || { echo "ERROR hold directory $dir stayed locked for LOCK_WAIT s"; exit 0; }
holdfile
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
""".replace("LOCK_WAIT", str(LOCK_WAIT_S)).replace("MAX_HOLD", str(MAX_HOLD_BYTES))


@dataclass(frozen=True)
class _Answer:
    state: str
    path: str
    info: HoldInfo | None


def default_owner() -> str:
    """`user@controller` of this process."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _call(host: Host, op: str, path: str | None, token: str = "", ttl: int = 0, doc: str = "", expect: str = "") -> _Answer:
    argv = ["sh", "-c", _SCRIPT, "hold", op, path or "", token, str(ttl), doc, expect, hold_dir()]
    result = host.run(argv, timeout=LOCK_WAIT_S + 20)
    lines = result.stdout.splitlines()
    if not result.ok or not lines:
        why = (result.stderr.strip() or f"exit {result.rc}").splitlines()[-1]
        raise HostError(f"host {host.name}: hold {op} failed: {why}")
    head = lines[0].split(" ", 3)
    if head[0] == "REFUSED":  # bad input (the inventory's runner_hold_path), not a fault of the host
        raise UsageError(f"host {host.name}: hold {op} refused: {lines[0][8:]}")
    if head[0] == "ERROR":
        raise HostError(f"host {host.name}: hold {op}: {lines[0][6:]}")
    state, now, mtime, where = head[0], int(head[1]), int(head[2]), head[3]
    return _Answer(state, where, parse_hold(host.name, where, "\n".join(lines[1:]), now - mtime))



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
        return lost_reason(self.host.name, self.info.campaign, now)

    def release(self) -> None:
        """Remove the hold if it is still ours (a hold taken over by someone else is left alone)."""
        _call(self.host, "release", self.path, self.token)



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


