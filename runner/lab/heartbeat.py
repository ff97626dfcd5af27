"""A campaign's holds on all its hosts for its whole life: taken all or nothing (or the free ones), kept by a
heartbeat every TTL/4 from a background thread, released at the end; a host dropped mid-campaign is released
then, or at each heartbeat until it answers."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from runner.errors import HostError
from runner.hosts.base import Host
from runner.lab.guard import HoldGuard
from runner.lab.holdfile import DEFAULT_TTL, HoldInfo, HoldLost, HostBusy
from runner.lab.holds import Hold, acquire, default_owner
from runner.provision.inventory import connect

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
    return spec if isinstance(spec, Host) else connect(spec)


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
    listed in `HoldSet.lost`. A host's hold file: `paths[name]`, else its spec's `hold_path` (the inventory's
    `runner_hold_path`), else the default.
    """
    owner = owner or default_owner()
    paths = {**{h.name: h.hold_path for h in hosts if getattr(h, "hold_path", None)}, **(paths or {})}
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


