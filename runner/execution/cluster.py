"""The Dask side: a LocalCluster by default, or an existing scheduler (`dask scheduler` + `dask worker`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from runner.errors import RunnerError


@contextlib.contextmanager
def client_for(scheduler: str | None, *, n_hosts: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise RunnerError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            if not client.scheduler_info().get("workers"):
                client.wait_for_workers(1, timeout=30)
        except TimeoutError:
            client.close()
            raise RunnerError(f"the Dask scheduler at {scheduler} has no workers; start some with `dask worker {scheduler}`") from None
        try:
            yield client
        finally:
            client.close()
        return
    # One single-threaded worker process per host (at most 8; beyond that, threads share them): trials
    # mostly wait on their hosts, and separate processes keep a crashed trial from taking the rest along.
    n_workers = max(1, min(n_hosts, 8))
    threads = -(-max(1, n_hosts) // n_workers)
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
