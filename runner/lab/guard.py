"""The trial guard: a campaign's hold confirmed on the host by the trial's own first command (HoldGuard: the
command runs under a `sh` that reads the hold file with a builtin and execs the command only if the hold still
has our token), so a hold released by force stops the next trial at once, without a round trip per trial."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import HostError
from runner.hosts.base import CommandResult, Host, Spawned
from runner.lab.holdfile import LOCK_WAIT_S, HoldLost, lost_reason, parse_hold

# HoldGuard: run "$@" only while the hold file $1 (one line: json.dumps, no newline inside) has token $2, read
# by the shell itself (no lock, no write, no other process); else say what the file has now and exit GUARD_RC.
GUARD_RC = 86
_GUARD_MARK = "runner-hold-lost"
_GUARD = (
    r'''IFS= read -r hold 2>/dev/null < "$1"; case "$hold" in *"\"token\": \"$2\""*) shift 2; exec "$@";; esac; '''
    f"printf '{_GUARD_MARK} %s: %s\\n' \"$2\" \"$hold\" >&2; exit {GUARD_RC}"
)



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
                return lost_reason(self.host, self.campaign, info and f"held by {info.owner} for campaign {info.campaign} since {info.since}")
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


