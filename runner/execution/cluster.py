"""The Dask side: a LocalCluster by default, or an existing scheduler (`dask scheduler` + `dask worker`).

Trials ask Dask for no resources and name only a preferred worker (other workers are allowed), so a task
can never wait for something no worker has; the controller itself keeps one trial per host in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from runner import __version__
from runner.errors import RunnerError

WORKER_WAIT_ENV = "RUNNER_WORKER_WAIT"
WORKER_WAIT_S = 30.0  # how long to wait for a worker to join an external scheduler (env RUNNER_WORKER_WAIT)
CONNECT_TIMEOUT_S = 10.0


def worker_wait_s() -> float:
    """Seconds to wait for workers of an external scheduler (RUNNER_WORKER_WAIT, default 30)."""
    raw = os.environ.get(WORKER_WAIT_ENV)
    if raw is None:
        return WORKER_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        raise RunnerError(f"{WORKER_WAIT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise RunnerError(f"{WORKER_WAIT_ENV}={raw!r} must be > 0 seconds")
    return value


def worker_addresses(client: Any) -> list[str]:
    """Addresses of the scheduler's workers now, sorted."""
    return sorted(client.scheduler_info(n_workers=-1).get("workers", {}))


def _local_cluster(n_workers: int, threads: int) -> Any:
    """Start a LocalCluster; once more if it fails to start (worker processes can miss Dask's start-up
    timeout on a heavily loaded machine)."""
    from distributed import LocalCluster

    for attempt in (1, 2):
        try:
            return LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads,
                processes=True,
                # A free loopback port: the default 8787 may be taken (a lab scheduler's dashboard, another
                # campaign), and Dask then warns and leaks the socket it probed with.
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
            )
        except RuntimeError as exc:
            if attempt == 2:
                raise RunnerError(f"the local Dask cluster did not start: {exc}") from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def client_for(scheduler: str | None, *, n_hosts: int) -> Iterator[Any]:
    """A connected Client with at least one worker; RunnerError (one line) when there is none."""
    from distributed import Client

    if scheduler:
        wait_s = worker_wait_s()
        _probe(scheduler)
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S:g}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise RunnerError(f"cannot reach the Dask scheduler at {scheduler}: {_one_line(exc)}") from None
        try:
            _check_workers(client, scheduler, wait_s)
            yield client
        finally:
            client.close()
        return
    # One single-threaded worker process per host (at most 8; beyond that, threads share them): trials
    # mostly wait on their hosts, and separate processes keep a crashed trial from taking the rest along.
    n_workers = max(1, min(n_hosts, 8))
    threads = -(-max(1, n_hosts) // n_workers)
    cluster = _local_cluster(n_workers, threads)
    client = Client(cluster)
    try:
        from runner.execution.worker import worker_version

        client.run(worker_version)  # the workers import what trials need now, all at once
        yield client
    finally:
        client.close()
        cluster.close()


def _probe(scheduler: str) -> None:
    """Fail fast (one line) when nothing listens at a tcp:// scheduler address; Dask would retry for 10 s."""
    host, sep, port = scheduler.removeprefix("tcp://").rpartition(":")
    if not scheduler.startswith("tcp://") or not sep or not port.isdigit():
        return  # another protocol or form: let Dask judge it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        why = exc.strerror or _one_line(exc)
        raise RunnerError(f"cannot reach the Dask scheduler at {scheduler}: {why}; is `dask scheduler` running there?") from None


def _check_workers(client: Any, scheduler: str, wait_s: float) -> None:
    """At least one worker, and every worker imports this runner version."""
    from runner.execution.worker import worker_version

    try:
        if not worker_addresses(client):
            client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError:
        raise RunnerError(
            f"the Dask scheduler at {scheduler} has no workers after {wait_s:g} s; "
            f"start some with `dask worker {scheduler}` (in the runner's environment)"
        ) from None
    try:
        versions = client.run(worker_version)
    except Exception as exc:  # noqa: BLE001 - e.g. ModuleNotFoundError unpickling on a worker without runner
        raise RunnerError(
            f"the Dask workers of {scheduler} cannot run the runner ({type(exc).__name__}: {_one_line(exc)}); "
            "start `dask worker` from the environment where runner is installed"
        ) from None
    wrong = {addr: v for addr, v in versions.items() if v != __version__}
    if wrong:
        addr, version = sorted(wrong.items())[0]
        raise RunnerError(
            f"Dask worker {addr} of {scheduler} runs runner {version}, this controller {__version__}; "
            "restart the workers from this runner's environment"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
