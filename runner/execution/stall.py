"""Why a campaign makes no progress, asked of the Dask scheduler and its workers when no trial started or
finished for RUNNER_STALL_AFTER seconds (runner.execution.dispatch says it in the progress output)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from runner.execution.worker import leases_waiting


def why_stalled(client: Any, pending: Mapping[Any, str]) -> str | None:
    """Why the trials in flight (future -> host) make no progress, asked of the scheduler; None if every trial
    in flight is running its workload (long trials, bounded by the timeout)."""
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    if not info:
        return "no Dask worker is connected to the scheduler"
    keys = {future.key: name for future, name in pending.items()}
    stacks = client.call_stack(keys=list(keys)) if keys else {}
    executing = {key for per in (stacks or {}).values() for key in per}
    waits = client.run(leases_waiting, on_error="ignore") if keys else {}  # a worker that just left: not asked
    leased = {key for per in (waits or {}).values() for key in per}
    return stall_reason(keys, client.processing(), executing, sum(w.get("nthreads", 1) for w in info.values()), leased)


def stall_reason(
    pending: Mapping[Any, str], processing: Mapping[str, Sequence[Any]], executing: Collection[Any], threads: int,
    leased: Collection[Any] = (),
) -> str | None:
    """Why the trials in flight make no progress, from what the scheduler and the workers say (pure). `pending`:
    the Dask key of each trial in flight -> its host; `processing`: worker -> the keys it has; `executing`: the
    keys running now; `leased`: the keys waiting for their host's lease (worker.leases_waiting: another
    campaign measures on the host); `threads`: the scheduler's worker threads. None when every trial in flight
    runs its workload, or waits only for this campaign's own running trials."""
    if threads <= 0:
        return "no Dask worker is connected to the scheduler"
    placed = {key for keys in processing.values() for key in keys}
    on_lease, running, waiting = [], [], []
    for key, host in sorted(pending.items(), key=lambda kv: kv[1]):
        if key in leased:
            on_lease.append(host)
        elif key not in executing:
            waiting.append(host)
        else:
            running.append(host)
    reasons = []
    if on_lease:
        whom = "every host" if len(on_lease) == len(pending) else "host" + ("s" if len(on_lease) > 1 else "")
        reasons.append(f"{whom} {', '.join(on_lease)} held by another campaign on this scheduler (waiting for the host lease)")
    others = len(placed - set(pending))
    if waiting and others:
        reasons.append(
            f"all Dask workers busy elsewhere: {others} other tasks on the {threads} worker threads; "
            f"trials for {', '.join(waiting)} wait for a thread"
        )
    elif waiting and len(running) + len(on_lease) < threads:
        reasons.append(f"trials for {', '.join(waiting)} not taken by any Dask worker")
    return "; ".join(reasons) or None
