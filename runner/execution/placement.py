"""Where a campaign's trials run: the matrix's `hosts.placement`, and each host's working directory."""

from __future__ import annotations

import collections
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from runner.matrix.load import Matrix

WORKDIR_ROOT = "/var/tmp/runner"  # on every host: <root>/<campaign>/<host>/ holds the campaign's builds


@dataclass(frozen=True)
class Placement:
    """`each`: every host runs the whole matrix (plan() names each trial's host), so a host has its own queue
    and the trials of a host that is down are recorded as failed there. `pool`: the hosts share one queue,
    any live host takes the next trial, and a campaign without a live host cannot start."""

    kind: str = "pool"

    @classmethod
    def of(cls, matrix: Matrix) -> Placement:
        return cls(matrix.placement)

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
