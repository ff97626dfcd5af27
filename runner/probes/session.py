"""Running the chosen probes around one workload command on one Host: `ProbeWindow`.

    with ProbeWindow(host, ["perf_stat", "schedstat"], ctx) as probed:
        result = host.run(argv, ...)
    probed.metrics  # Metric rows with probe and side set
    probed.notes    # one-line reports: a probe unavailable on the host (once), one that failed or hung

Never raises for a probe's failure: each check, start and stop runs in a thread bounded by the probe's
timeout; what fails is left out and reported. Availability is checked once per host, side and process; the
guests of one configuration on a hypervisor host share one check (`owner`, `where`: the first guest checks,
the others wait for its answer), so a probe missing in a guest image is reported once, not once per guest.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

from runner.hosts.base import Host
from runner.probes.base import Probe, ProbeContext, get
from runner.records.metric import Metric
from runner.util import one_line

_lock = threading.Lock()
_checked: dict[tuple[str, str, str, str], str | None] = {}  # (owner, side, where, probe) -> None (usable) or the reason
_checking: dict[tuple[str, str, str, str], threading.Event] = {}  # checks under way (set when _checked has them)


class _Hung(Exception):
    pass


def bounded(fn: Callable[[], Any], timeout: float, name: str) -> Any:
    """fn() in a daemon thread, waited for at most `timeout` s: its value, its exception re-raised, or
    _Hung. A hung call is left behind (its host commands carry their own timeouts)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True, name=f"probe-{name}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise _Hung(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def forget_host(name: str) -> None:
    """Check the probes again on this host (and its guests) next time (after a host failure: it may have changed)."""
    with _lock:
        for key in [k for k in _checked if k[0] == name]:
            del _checked[key]


def scratch_dir(workdir: str) -> str:
    return f"{workdir.rstrip('/')}/.probes"


class ProbeWindow:
    """Start the probes on enter, stop them on exit; see the module docstring. `owner`: the host whose checks
    these are (default ctx.host; a guest's hypervisor host, so forget_host(owner) forgets them too); `where`:
    what the notes call the place (default ctx.host), also the scope of one availability check (e.g. "kvm guests
    (kernel default, image minimal) of h1": all guests of that configuration)."""

    def __init__(self, host: Host, names: Sequence[str], ctx: ProbeContext, *, owner: str | None = None, where: str | None = None) -> None:
        self.host = host
        self.ctx = ctx
        self.owner = ctx.host if owner is None else owner
        self.where = where
        self.names = list(names)
        self.metrics: tuple[Metric, ...] = ()
        self.notes: tuple[str, ...] = ()
        self._running: list[tuple[Probe, Any]] = []
        self._notes: list[str] = []

    def _where(self) -> str:
        if self.where is not None:
            return self.where
        return f"{self.ctx.host} ({self.ctx.side})" if self.ctx.side != "host" else self.ctx.host

    def _usable(self, probe: Probe) -> bool:
        key = (self.owner, self.ctx.side, self.where or self.ctx.host, probe.name)
        with _lock:
            known, reason, pending = key in _checked, _checked.get(key), _checking.get(key)
            if not known and pending is None:
                _checking[key] = threading.Event()
        if known:
            return reason is None
        if pending is not None:  # another guest of the configuration checks it: its answer holds here too
            pending.wait(probe.timeout + 5.0)
            with _lock:
                return key in _checked and _checked[key] is None
        try:
            if self.ctx.side not in probe.sides:
                reason = f"reads only on the {' or '.join(probe.sides)} side"
            else:
                try:
                    reason = bounded(lambda: probe.check(self.host, self.ctx), probe.timeout, probe.name)
                except Exception as exc:  # noqa: BLE001 - a failing check means unusable, said once
                    reason = f"check failed: {one_line(exc)}"
            with _lock:
                _checked[key] = reason
        finally:  # also on Ctrl-C: nobody waits for a check that ended
            with _lock:
                _checking.pop(key).set()
        if reason is not None:
            self._notes.append(f"probe {probe.name} not available on {self._where()}: {reason}; not recorded there")
        return reason is None

    def __enter__(self) -> ProbeWindow:
        if not self.names:
            return self
        probes = [get(n) for n in self.names]
        usable = [p for p in probes if self._usable(p)]
        if usable:
            mk = self.host.run(["mkdir", "-p", self.ctx.scratch], timeout=30)
            if not mk.ok:
                self._notes.append(f"probes skipped on {self._where()}: cannot create {self.ctx.scratch}: {mk.tail()}")
                usable = []
        for probe in usable:
            try:
                state = bounded(lambda p=probe: p.start(self.host, self.ctx), probe.timeout, probe.name)
            except Exception as exc:  # noqa: BLE001 - the trial goes on without this probe
                self._notes.append(f"probe {probe.name} failed to start on {self._where()}: {one_line(exc)}; left out of this trial")
                continue
            self._running.append((probe, state))
        self.notes = tuple(self._notes)
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None and not issubclass(kind, Exception):  # Ctrl-C: no waiting for readings; the
            self._running = []  # samplers end when their stdin closes with this process or connection
            return
        rows: list[Metric] = []
        for probe, state in reversed(self._running):
            try:
                got = bounded(lambda p=probe, s=state: p.stop(self.host, self.ctx, s), probe.timeout, probe.name)
            except Exception as err:  # noqa: BLE001
                self._notes.append(f"probe {probe.name} failed on {self._where()}: {one_line(err)}; left out of this trial")
                continue
            rows += [dataclasses.replace(m, probe=probe.name, side=self.ctx.side) for m in got or ()]
        self._running = []
        self.metrics = tuple(rows)
        self.notes = tuple(self._notes)
