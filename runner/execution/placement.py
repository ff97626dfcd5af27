"""Where a campaign's trials run: the matrix's `hosts.placement`, which hosts take which environments
(`place_envs`, from what each host can run), the order-aware estimate of a campaign's duration over its
hosts (`makespan`), and each host's working directory. Everything here is pure: the probes that find what a
host can run are in runner.execution.preflight."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner import defaults
from runner.errors import UsageError
from runner.matrix.load import Matrix

WORKDIR_ROOT = "/var/tmp/runner"  # on every host: <root>/<campaign>/<host>/ holds the campaign's builds


def trial_env(trial: Any) -> str:
    """The environment a trial runs in (its `env`, else the default)."""
    return str(trial.param_dict.get("env", defaults.ENV))


@dataclass(frozen=True)
class EnvPlacement:
    """Which hosts take which of a campaign's environments (`place_envs`): `hosts` env -> the hosts that take
    it, in inventory order; `left_out` host -> why it takes none; `notes` one line each for the display. A
    host not named anywhere (not probed: unreachable at the start) is taken to run every environment."""

    hosts: Mapping[str, tuple[str, ...]]
    left_out: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def known(self, host: str) -> bool:
        return host in self.left_out or any(host in names for names in self.hosts.values())

    def runs(self, host: str, env: str) -> bool:
        """`host` takes trials of `env` (an environment outside the campaign's, or an unknown host: yes)."""
        if env not in self.hosts or not self.known(host):
            return True
        return host in self.hosts[env]

    def runs_all(self, host: str) -> bool:
        return all(self.runs(host, env) for env in self.hosts)

    def envs_of(self, host: str) -> tuple[str, ...]:
        return tuple(env for env in self.hosts if host in self.hosts[env])

    def lines(self) -> list[str]:
        """'kvm1: host, container, kvm' per host that takes something, then one line per host left out (pure)."""
        order = list(dict.fromkeys(h for names in self.hosts.values() for h in names))
        return [f"{h}: {', '.join(self.envs_of(h))}" for h in order] + [why for why in self.left_out.values()]


def place_envs(envs: Sequence[str], abilities: Mapping[str, Mapping[str, str | None]], *, group: str = "",
               own_kernel: Collection[str] = (), dom0: Collection[str] = ()) -> EnvPlacement:
    """Which hosts take which environments (pure). `abilities` host -> env -> None when the host can run it,
    else why not (one clause: "needs xl (a Xen dom0 with xen-utils); not found there"); `own_kernel` the
    environments that run on the host's own kernel (the bare host, containers); `dom0` the hosts that are
    a Xen dom0, whose own kernel is a paravirtualised guest of Xen: they take an own-kernel environment only
    when no other host of the group can.

    An environment no host can run is one UsageError naming it, the hosts and why each cannot (the first
    such environment; the others are counted). A host that takes none of the environments is left out,
    with one line saying why."""
    names = list(abilities)
    hosts: dict[str, tuple[str, ...]] = {}
    whys: dict[str, dict[str, str]] = {h: {} for h in names}
    notes: list[str] = []
    nobody: list[str] = []
    for env in dict.fromkeys(envs):
        able = [h for h in names if abilities[h].get(env) is None]
        for h in names:
            if (why := abilities[h].get(env)) is not None:
                whys[h][env] = why
        if not able:
            nobody.append(env)
            continue
        if env in own_kernel:
            bare = [h for h in able if h not in dom0]
            if bare and len(bare) < len(able):
                paravirt = [h for h in able if h in dom0]
                for h in paravirt:
                    whys[h][env] = f"a Xen dom0 (its kernel is a guest of Xen, not the bare host): {env} goes to {', '.join(bare)}"
                notes.append(f"env {env} runs on {', '.join(bare)} only: {', '.join(paravirt)} "
                             f"{'is a Xen dom0' if len(paravirt) == 1 else 'are Xen dom0s'}, whose kernel is a guest of Xen")
                able = bare
        hosts[env] = tuple(able)
    if nobody:
        env = nobody[0]
        where = f"of {group!r} " if group else ""
        detail = "; ".join(f"{h}: {whys[h].get(env, 'cannot')}" for h in names) or "the group has no host"
        more = f" (nor can any run env {', '.join(nobody[1:])})" if len(nobody) > 1 else ""
        raise UsageError(f"env {env}: no host {where}can run it: {detail}{more}")
    left_out: dict[str, str] = {}
    for h in names:
        if not any(h in taken for taken in hosts.values()):
            left_out[h] = f"host {h} left out: it runs none of the campaign's environments ({'; '.join(f'{e}: {w}' for e, w in whys[h].items())})"
    return EnvPlacement(hosts, left_out, tuple(notes))


def declared_abilities(envs: Sequence[str], specs: Sequence[Any]) -> dict[str, dict[str, str | None]]:
    """What the inventory says each host may run (its runner_envs; none said: everything), without contacting
    it (pure): the plan's view, which launch narrows down with what it finds on the hosts."""
    out: dict[str, dict[str, str | None]] = {}
    for spec in specs:
        declared = getattr(spec, "envs", None)
        out[spec.name] = {env: None if declared is None or env in declared else f"not in its runner_envs ({', '.join(declared) or 'none'})"
                          for env in dict.fromkeys(envs)}
    return out


def makespan(trials: Sequence[Any], hosts: Sequence[str], cost: Callable[[str, Any, Any], float], *,
             runs: Callable[[str, Any], bool] = lambda host, trial: True, per_host: bool = False,
             costs: dict[str, float] | None = None) -> tuple[float, dict[str, float]]:
    """Rough wall time of running `trials` on `hosts` as the dispatcher does (pure): placement each
    (`per_host`), every host runs the trials named for it; pool, the host that is free first takes the
    first trial it can run (`runs`). `cost(host, trial, previous trial on that host or None)` is a trial's
    seconds there (a boot when the guest configuration changes). Returns (the longest host's time, the
    time of each host); `costs`, when given, gets each trial's seconds by trial_id (the progress's weights)."""
    busy = dict.fromkeys(hosts, 0.0)
    last: dict[str, Any] = dict.fromkeys(hosts)

    def take(host: str, t: Any) -> None:
        seconds = cost(host, t, last[host])
        busy[host] += seconds
        last[host] = t
        if costs is not None:
            costs[t.trial_id] = seconds

    if per_host:
        for t in trials:
            if t.host in busy:
                take(t.host, t)
        return max(busy.values(), default=0.0), busy
    queue = list(trials)
    idle: set[str] = set()  # hosts with nothing left they can run
    while queue and len(idle) < len(busy):
        host = min((h for h in busy if h not in idle), key=lambda h: busy[h])
        i = next((i for i, t in enumerate(queue) if runs(host, t)), None)
        if i is None:
            idle.add(host)
            continue
        take(host, queue.pop(i))
    return max(busy.values(), default=0.0), busy


@dataclass(frozen=True)
class Placement:
    """`each`: every host runs the whole matrix (plan() names each trial's host), so a host has its own queue
    and the trials of a host that is down are recorded as failed there. `pool`: the hosts share one queue,
    any live host takes the next trial it can run (`envs`: which hosts take which environments; None:
    every host takes every trial), and a campaign without a live host cannot start."""

    kind: str = "pool"
    envs: EnvPlacement | None = None

    @classmethod
    def of(cls, matrix: Matrix) -> Placement:
        return cls(matrix.placement)

    def with_envs(self, envs: EnvPlacement | None) -> Placement:
        return dataclasses.replace(self, envs=envs)

    def runs(self, host: str, trial: Any) -> bool:
        """`host` may run `trial` (its environment is one the host takes)."""
        return self.envs is None or self.envs.runs(host, trial_env(trial))

    def pick(self, queue: Sequence[tuple[Any, int]], host: str) -> int | None:
        """The index in `queue` of the first (trial, attempt) `host` may run, None if there is none."""
        if not queue:
            return None
        if self.envs is None or self.envs.runs_all(host):
            return 0
        return next((i for i, (trial, _) in enumerate(queue) if self.runs(host, trial)), None)

    @property
    def per_host(self) -> bool:
        """Every host runs its own trials (placement each)."""
        return self.kind == "each"

    def queue_key(self, host: str) -> str | None:
        """The queue a trial of `host` waits in: the host's own, or the pool's (None)."""
        return host if self.per_host else None

    def queues(self, todo: Iterable[tuple[Any, int]], hosts: Collection[str]) -> dict[str | None, collections.deque]:
        """(trial, attempt) pairs in their queues: one per host of `hosts` (each), else one for the pool."""
        if not self.per_host:
            return {None: collections.deque(todo)}
        queues: dict[str | None, collections.deque] = {name: collections.deque() for name in hosts}
        for trial, attempt in todo:
            queues[trial.host].append((trial, attempt))
        return queues


def workdir_for(matrix: Matrix, spec: Any) -> str:
    base_dir = getattr(spec, "workdir", None) or WORKDIR_ROOT
    return f"{base_dir}/{matrix.campaign}/{spec.name}"
