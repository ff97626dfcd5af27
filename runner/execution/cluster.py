"""The Dask side: a LocalCluster by default, or an existing scheduler (`dask scheduler` + `dask worker`).

Trials ask Dask for no resources and name only a preferred worker (other workers are allowed), so a task
can never wait for something no worker has; the controller itself keeps one trial per host in flight.
How the controller lives with workers that come and go, and with a scheduler that goes away, is in
runner.execution.dispatch (Dispatch._loop); the waits it uses are here (RUNNER_WORKER_WAIT, RUNNER_STALL_AFTER).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from runner import __version__
from runner.errors import RunnerError, UsageError
from runner.util import env_seconds, one_line

# Imported in the functions that use them, not here: Dask (distributed: about a second of imports), asyncio with
# it, and runner.execution.worker (what trials need: SSH, the plugins). `runner launch` imports this module
# first, to start the forkserver (prestart) before it pays for them; `runner plan` imports it and starts no
# cluster.

WORKER_WAIT_ENV = "RUNNER_WORKER_WAIT"
WORKER_WAIT_S = 30.0  # how long to wait for a worker to join an external scheduler (env RUNNER_WORKER_WAIT)
CONNECT_TIMEOUT_S = 10.0


STALL_AFTER_ENV = "RUNNER_STALL_AFTER"
STALL_AFTER_S = 60.0  # no trial started or finished for this long: the progress output says why (env RUNNER_STALL_AFTER)


class SchedulerLost(RunnerError):
    """The controller lost its Dask scheduler mid-campaign (it stopped or restarted): the campaign stops;
    what was recorded stays, the trials that were running are measured again by a relaunch."""


def worker_wait_s() -> float:
    """Seconds to wait for workers of an external scheduler, at the start and whenever every worker has left
    (RUNNER_WORKER_WAIT, default 30)."""
    return env_seconds(WORKER_WAIT_ENV, WORKER_WAIT_S)


def stall_after_s() -> float:
    """Seconds without a trial starting or finishing, trials pending, before the progress output says why
    (RUNNER_STALL_AFTER, default 60); said again after each such period while it lasts."""
    return env_seconds(STALL_AFTER_ENV, STALL_AFTER_S)


def worker_addresses(client: Any) -> list[str]:
    """Addresses of the scheduler's workers now, sorted."""
    return sorted(client.scheduler_info(n_workers=-1).get("workers", {}))


# The launch's own LocalCluster: a few worker processes whose trials mostly wait on their hosts, on machines
# that may have 2 cores. Dask's defaults sample and poll for a dashboard this cluster does not have; with them,
# 4 idle workers and their nannies took 3.8 s of CPU per 10 s here (0.35 s without), CPU the trials' hosts lack.
LOCAL_DASK_CONFIG = {
    # Workers fork from one server process that imported what trials need once (WORKER_PRELOAD), instead of
    # each starting a new interpreter and importing it all again (4 workers: 11 s to ready instead of 19 s here).
    "distributed.worker.multiprocessing-method": "forkserver",
    "distributed.worker.profile.enabled": False,  # the statistical profiler: every thread at 100 Hz per worker
    "distributed.admin.tick.interval": "500ms",  # event-loop stall detection (20 ms)
    "distributed.admin.system-monitor.interval": "2s",  # CPU/memory samples for the dashboard (500 ms)
    "distributed.worker.memory.monitor-interval": "1s",  # the nanny's memory check (100 ms)
    # Every trial names its host's worker; the next trial of a host waits there (dispatch.Dispatch._depth).
    # Stealing would move it to an idle worker, to wait there for the host's turn on a new connection.
    "distributed.scheduler.work-stealing": False,
}
WORKER_PRELOAD = ("runner.execution.quiet_workers", "distributed", "runner.execution.worker", "runner.provision.inventory", "runner.workloads.base")


def prestart(scheduler: str | None) -> None:
    """Without a scheduler: start, now, the process the local cluster's workers will fork from, so that it
    imports what trials need while the caller imports and reads the rest (the command line calls this first).
    Cheap and safe to call more than once; with a scheduler, nothing."""
    if not scheduler:
        _start_forkserver()


def _start_forkserver() -> None:
    """Start the server that local workers fork from (once per process), importing WORKER_PRELOAD in it while
    this process goes on (importing Dask itself, facts, holds). Only the standard library: it may run first."""
    import multiprocessing  # only a launch that starts a local cluster starts the server
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_PRELOAD))
    # The server starts with Ctrl-C ignored (until quiet_workers, its first import, takes over): a SIGINT to the
    # process group while it imports would print its traceback beside the controller's one line.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _local_cluster(n_workers: int, threads: int) -> Any:
    """Start a LocalCluster (LOCAL_DASK_CONFIG, no dashboard); once more if it fails to start (worker processes
    can miss Dask's start-up timeout on a heavily loaded machine). A forked worker gets this process's
    environment as it is now (Nanny `env`), as a spawned one would. Each worker still imports this process's
    main module (multiprocessing does, as __mp_main__): a script that launches campaigns keeps its heavy
    imports out of module level (bench/fanout_bench.py), or every worker pays them before the first trial."""
    _start_forkserver()
    import dask  # see the imports
    from distributed import LocalCluster

    with dask.config.set(LOCAL_DASK_CONFIG):
        for attempt in (1, 2):
            try:
                return LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=threads,
                    processes=True,
                    # Dask's HTTP routes on a free loopback port (the default 8787 may be taken: a lab scheduler's
                    # dashboard, another campaign; Dask then warns and leaks the socket it probed with); no
                    # dashboard: nobody sees it, and Bokeh costs a second of imports at every launch.
                    dashboard_address="127.0.0.1:0",
                    scheduler_kwargs={"dashboard": False},
                    silence_logs=logging.ERROR,
                    env=dict(os.environ),
                )
            except RuntimeError as exc:
                if attempt == 2:
                    raise RunnerError(f"the local Dask cluster did not start: {exc}") from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def client_for(scheduler: str | None, *, n_hosts: int) -> Iterator[Any]:
    """A connected Client with at least one worker; RunnerError (one line) when there is none."""
    from distributed import Client  # see the imports

    if scheduler:
        wait_s = worker_wait_s()
        check_scheduler(scheduler)  # launch checked it already; a direct caller gets the same one line
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S:g}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise RunnerError(f"cannot reach the Dask scheduler at {scheduler}: {one_line(exc)}") from None
        try:
            _check_workers(client, scheduler, wait_s)
            yield client
        finally:
            client.close()
        return
    n_workers, threads = local_shape(n_hosts)
    started = _warm.pop(threading.get_ident(), None)
    cluster = started.result() if started is not None else _local_cluster(n_workers, threads)
    client = Client(cluster)
    try:
        if started is None:
            client.run(_worker_version)  # the workers import what trials need now, all at once
        yield client
    finally:
        client.close()
        cluster.close()


_warm: dict[int, Future] = {}  # thread -> the local cluster warming() started for that thread's client_for


def local_shape(n_hosts: int) -> tuple[int, int]:
    """(worker processes, threads per worker) of the local cluster for `n_hosts` hosts (pure). One worker
    process per host, at most 8 (beyond that, hosts share them): trials mostly wait on their hosts, and
    separate processes keep a crashed trial from taking the rest along. Two threads per host: a host's next
    trial waits in its worker, behind the host's turn (dispatch.Dispatch._depth), and must never keep
    another host's trial from a thread."""
    n_workers = max(1, min(n_hosts, 8))
    return n_workers, 2 * -(-max(1, n_hosts) // n_workers)


def _worker_version() -> str:
    from runner.execution.worker import worker_version  # see the imports

    return worker_version()


def _started_cluster(n_workers: int, threads: int) -> Any:
    """A local cluster whose workers have imported what trials need (worker_version)."""
    _start_forkserver()  # first: it imports in its own process while this one imports Dask
    from distributed import Client  # see the imports

    cluster = _local_cluster(n_workers, threads)
    try:
        with Client(cluster) as client:
            client.run(_worker_version)
    except BaseException:
        cluster.close()
        raise
    return cluster


@contextlib.contextmanager
def warming(scheduler: str | None, *, n_hosts: int) -> Iterator[None]:
    """Start the local Dask cluster (no `scheduler`) in the background while the caller does other work
    (facts, holds, images: launch to first trial), for the next client_for of this thread, which takes it
    whatever its n_hosts by then; a cluster not taken is closed on exit. With a scheduler: nothing."""
    if scheduler:
        yield
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-cluster-start")
    me = threading.get_ident()
    _warm[me] = pool.submit(_started_cluster, *local_shape(n_hosts))
    pool.shutdown(wait=False)
    try:
        yield
    finally:
        unused = _warm.pop(me, None)
        if unused is not None:
            with contextlib.suppress(Exception):
                unused.result().close()


def check_scheduler(scheduler: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A tcp:// address (or HOST:PORT) is a Dask scheduler, else one UsageError line: nothing listens there,
    or what listens does not speak Dask's protocol (its first frame is not a Dask handshake), or it is a
    Dask worker, not a scheduler. Asks the scheduler's identity over its own protocol, so a lab scheduler's
    log stays quiet. An address that is not one (no port, an unknown scheme) is refused before anything
    connects; other protocols (tls://, inproc://, ...) are left to Dask."""
    from distributed.comm.registry import backends, get_backend  # see the imports

    allowed = "allowed: tcp://HOST:PORT or HOST:PORT (`dask scheduler` listens on 8786 by default), or another Dask protocol"
    scheme, sep, rest = scheduler.partition("://")
    if not sep:
        scheme, rest = "tcp", scheduler
    try:
        get_backend(scheme)
    except ValueError:
        raise UsageError(f"--scheduler {scheduler!r}: unknown protocol '{scheme}'; known: {', '.join(sorted(backends))}") from None
    if scheme != "tcp":
        return  # another protocol: let Dask judge it
    host, sep, port = rest.rpartition(":")
    if not sep or not host.strip("[]") or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise UsageError(f"--scheduler {scheduler!r} is not a scheduler address; {allowed}")
    try:  # nothing listening is said by the socket itself (Dask's connect would retry until its timeout)
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or one_line(exc)
        raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {why}; is `dask scheduler` running there?") from None
    identity = _identity(f"tcp://{rest}", timeout)
    if identity is None:
        raise UsageError(f"{scheduler} does not speak Dask's protocol (is it the scheduler's port? `dask scheduler` listens on 8786 by default)")
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise UsageError(f"{scheduler} is a Dask {kind or 'server'}, not a scheduler; give the address of `dask scheduler`")


def _identity(address: str, timeout: float) -> Any:
    """What the Dask server at `address` says it is (its `identity` reply, asked with Dask's own rpc); None
    when what answers there is not a Dask server (no handshake, foreign bytes, no reply within `timeout`)."""
    import asyncio  # with distributed (see the imports): only for --scheduler

    from distributed.core import rpc

    async def ask() -> Any:
        async with rpc(address, timeout=timeout) as server:
            return await server.identity()

    try:  # in a thread of its own: the caller's event loop (and tornado's idea of it) stays as it was
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-scheduler-check") as pool:
            return pool.submit(asyncio.run, asyncio.wait_for(ask(), timeout)).result()
    except Exception:  # noqa: BLE001 - whatever Dask makes of a server that is not one (MemoryError for a huge frame)
        return None


def _check_workers(client: Any, scheduler: str, wait_s: float) -> None:
    """At least one worker (RunnerError after `wait_s`: workers may be starting), and every worker imports this
    runner version (UsageError: `--scheduler` names a scheduler this runner cannot use, exit 2)."""
    from runner.execution.worker import worker_version  # see the imports

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
        raise UsageError(
            f"the Dask workers of {scheduler} cannot run the runner ({type(exc).__name__}: {one_line(exc)}); "
            "start `dask worker` from the environment where runner is installed"
        ) from None
    wrong = {addr: v for addr, v in versions.items() if v != __version__}
    if wrong:
        addr, version = sorted(wrong.items())[0]
        raise UsageError(
            f"Dask worker {addr} of {scheduler} runs runner {version}, this controller {__version__}; "
            "restart the workers from this runner's environment"
        )
