"""What a Dask worker does for one attempt of one trial. Never raises for a failed trial: it returns a record.

Runs inside Dask worker processes (local or remote `dask worker`s), so everything it gets and returns is
plain, picklable data. Connections to hosts, their CPU counts and the per-campaign preparation of a
workload on a host are cached in the worker process and reused across trials; a host failure forgets them.

Running an attempt twice (Dask re-runs a task whose worker died) is harmless: the worker only returns a
record, and the controller alone writes it, once per attempt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner import __version__, defaults
from runner.errors import HostError, RunnerError, TrialError
from runner.execution import environments
from runner.hosts.base import Host
from runner.hosts.local import running_groups
from runner.lab.guard import HoldGuard
from runner.lab.holdfile import HoldLost
from runner.provision.inventory import connect
from runner.records.store import AttemptRecord
from runner.trials import Trial
from runner.workloads import base
from runner.workloads.base import WorkloadContext

KILL_TIMEOUT_S = 10.0  # for the command that stops a campaign's workloads on a host


@dataclass(frozen=True)
class AttemptSpec:
    trial: Trial
    attempt: int
    host: Any  # runner.provision.inventory.HostSpec
    timeout: float
    workdir: str  # campaign working directory on the host
    # Hold a scheduler-wide lease on the host while the attempt runs, so campaigns sharing one
    # long-lived scheduler never measure on the same host at once (needs a distributed worker).
    host_lease: bool = False
    # Keep the trial's guests running after it: the next trial on this host has the same configuration.
    keep_guests: bool = False
    probes: tuple[str, ...] = ()  # the matrix's probes (runner.probes), run around the workload
    # The campaign's hold on the host (runner.lab.reservations.HoldGuard), confirmed on the host by the trial's
    # first command: a hold lost meanwhile stops the trial before anything of it runs (record kind "hold").
    hold: HoldGuard | None = None
    # (launch token, n): the n-th trial this launch sent to the host. A host's next trial may wait in its worker
    # while the previous one runs (dispatch.Dispatch._depth): they take the host in this order (_turn).
    turn: tuple[str, int] | None = None


_lock = threading.Lock()
_hosts: dict[Any, Host] = {}
_cpus: dict[Any, int] = {}


def _host(spec: Any) -> Host:
    with _lock:
        host = _hosts.get(spec)
        if host is None:
            host = _hosts[spec] = connect(spec)
        return host


def _host_cpus_cached(spec: Any, host: Host) -> int:
    """host_cpus once per host and worker process (it costs a round trip to the host)."""
    with _lock:
        cached = _cpus.get(spec)
    if cached is None:
        cached = host_cpus(host)
        with _lock:
            _cpus[spec] = cached
    return cached


def _forget(spec: Any) -> None:
    with _lock:
        host = _hosts.pop(spec, None)
        _cpus.pop(spec, None)
    environments.forget_host(spec.name)
    if host is not None:
        try:
            host.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass


def warm(spec: Any) -> bool:
    """Connect to a host and count its CPUs, in this worker's caches, before the campaign's first trial, so
    that every host starts its first trial at once (connecting is ~0.1 s of key exchange per host, and the
    count one more round trip). False if the host does not answer: its first trial says why."""
    try:
        _host_cpus_cached(spec, _host(spec))
    except Exception:  # noqa: BLE001 - the trial reports the same failure, as a record
        _forget(spec)
        return False
    return True


def host_cpus(host: Host) -> int:
    """Online CPUs of a host (what relative values such as '50%' refer to)."""
    res = host.run(["getconf", "_NPROCESSORS_ONLN"], timeout=30)
    if not res.ok:
        raise HostError(f"{host.name}: cannot count CPUs: {res.stderr.strip() or res.rc}")
    return int(res.stdout.strip())


def lease_name(spec: Any) -> str:
    """The scheduler-wide name of a host: its address (a local host is the worker's own machine)."""
    where = socket.gethostname() if spec.local else f"{spec.address}:{spec.port}"
    return f"runner-host:{where}"


_lease_waits: set[Any] = set()  # Dask keys of the trials in this worker waiting for their host's lease (_leased)


def leases_waiting() -> list[Any]:
    """The Dask keys of the trials in this worker that wait for their host's scheduler-wide lease: another
    campaign measures on the host (run on every worker by the controller when nothing moves)."""
    return list(_lease_waits)


@contextlib.contextmanager
def _leased(spec: AttemptSpec) -> Iterator[None]:
    if not spec.host_lease:
        yield
        return
    from distributed import Semaphore, get_worker  # a second of imports: `runner plan` imports this module too

    lease = Semaphore(max_leases=1, name=lease_name(spec.host))
    key = get_worker().get_current_task()
    _lease_waits.add(key)  # said to the controller while it waits (leases_waiting)
    try:
        lease.acquire()
    finally:
        _lease_waits.discard(key)
    try:
        yield
    finally:
        lease.release()


TURN_GRACE_S = 2.0  # how long a trial waits for its predecessor to start in this process before going on
_turns = threading.Condition()
_started_turn: dict[str, tuple[str, int]] = {}  # host lease name -> the (launch, n) that took the host last


@contextlib.contextmanager
def _turn(spec: AttemptSpec) -> Iterator[None]:
    """The host, for one trial at a time and in the order the controller sent them (spec.turn): the next
    trial of a host waits in its worker while the previous one runs. In this process, trial n waits until
    trial n-1 of the same launch has the host (or TURN_GRACE_S, if n-1 never came here: sent again elsewhere
    after worker churn); then it takes a lock file per host (flock: per open file, so threads and processes
    alike; released if the process dies), which it gets when n-1 ends. No turn (a shared scheduler's
    trials): nothing; the scheduler-wide host lease (_leased) keeps campaigns apart there."""
    if spec.turn is None:
        yield
        return
    launch, n = spec.turn
    name = lease_name(spec.host)

    def predecessor_has_it() -> bool:
        last = _started_turn.get(name)
        return n <= 1 or (last is not None and last[0] == launch and last[1] >= n - 1)

    with _turns:
        _turns.wait_for(predecessor_has_it, timeout=TURN_GRACE_S)
    folder = os.path.join(tempfile.gettempdir(), f"runner-turns-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(folder, hashlib.sha256(name.encode()).hexdigest()[:24] + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with _turns:
            _started_turn[name] = (launch, n)
            _turns.notify_all()
        yield
    finally:
        os.close(fd)  # releases the lock


def execute(spec: AttemptSpec) -> AttemptRecord:
    """Run one attempt of one trial on its host and return its record (never raises for a failed trial)."""
    with _leased(spec), _turn(spec):
        return _execute(spec)


def _execute(spec: AttemptSpec) -> AttemptRecord:
    trial = spec.trial
    params = trial.param_dict
    started = time.time()
    t0 = time.monotonic()
    workload_wall = None

    def record(status: str, error: str | None, kind: str | None, metrics: tuple = (), *, accel: str | None = "none",
               guest_json: str | None = None, guest: Mapping[str, Any] | None = None) -> AttemptRecord:
        return AttemptRecord.build(
            trial, spec.attempt, spec.host.name, status, error, kind, started_at=started, ended_at=time.time(),
            wall_s=time.monotonic() - t0, workload_wall_s=workload_wall, accel=accel, guest_json=guest_json,
            guest=guest, metrics=metrics,
        )

    plugin = base.get(trial.workload)
    env = str(params.get("env", defaults.ENV))
    guests_kept = environments.starts_guests(env)
    if guests_kept:
        # Registers the guest runner; imported on the first guest trial only, so a worker process that runs
        # trials on hosts starts without it (0.6 s of imports).
        from runner.execution import guests  # noqa: F401
    try:
        host = _host(spec.host)
        if spec.hold is not None:
            guarded = spec.hold.wrap(host)
            if guests_kept:  # guests kept for reuse outlive the trial: give them the host itself
                guarded.confirm()
            else:
                host = guarded  # the first command of the trial (CPU count, work directory, probe, workload) checks
        ctx = WorkloadContext(
            host=host.name,
            workdir=spec.workdir,
            cpus=_host_cpus_cached(spec.host, host),
            extra={
                "campaign": trial.campaign,
                "trial_id": trial.trial_id,
                "keep_guests": spec.keep_guests,
                "probes": spec.probes,
                "attempt": spec.attempt,
                "guest_network": {"bridge": spec.host.guest_bridge, "subnet": spec.host.guest_subnet},
            },
        )
        run_env = environments.get(env)
        outcome = run_env(host, plugin, params, ctx, spec.timeout)
        workload_wall = outcome.workload_wall_s
        kind = {"ok": None, "timeout": "timeout"}.get(outcome.status, "failed")
        rec = record(outcome.status, outcome.error, kind, outcome.metrics, accel=outcome.accel, guest_json=outcome.guest_json, guest=outcome.extra)
        return dataclasses.replace(rec, notes=outcome.notes) if outcome.notes else rec
    except HoldLost as exc:  # nothing of the trial ran: the controller sends it nowhere else on this host
        return record("failed", str(exc), "hold")
    except HostError as exc:
        _forget(spec.host)
        return record("failed", str(exc), "host", **_guest_fields(params, exc))
    except (TrialError, RunnerError) as exc:
        return record("failed", str(exc), "failed", **_guest_fields(params, exc))
    except Exception as exc:  # noqa: BLE001 - a bug must not cost the campaign; the record keeps it
        last = traceback.format_exception_only(exc)[-1].strip()
        return record("failed", f"{spec.host.name}: internal error: {last}", "failed")


def _guest_fields(params: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    """What a failed attempt records about its guests: the accelerator and guest description the
    environment attached to the error (guests.py), else, in a guest environment, accel unknown (null), never
    "none" (which says: no hypervisor)."""
    fields = getattr(exc, "trial_fields", None) or {}
    environment = environments.environment(str(params.get("env", defaults.ENV)))
    if not environment.starts_guests:
        return {}
    accel = fields.get("accel", environment.failure_accel)
    return {"accel": accel, "guest_json": fields.get("guest_json"), "guest": fields.get("extra")}


def release_guests(campaign: str | None = None) -> int:
    """Destroy the guests this worker keeps for reuse (of `campaign` only, if given); how many boots."""
    return environments.release_guests(campaign)


def worker_version() -> str:
    """The runner version this worker imports; the controller calls it on every worker before the first
    trial, which also loads what trials need (the workload plugins; SSH came with this module) so the first
    trial does not pay for it."""
    base.known()
    return __version__


# Kills every process whose working directory is $1: a campaign's workload and its `timeout` wrapper.
_KILL_BY_CWD = 'for p in /proc/[0-9]*; do [ "$(readlink "$p/cwd" 2>/dev/null)" = "$1" ] && kill -KILL "${p#/proc/}" 2>/dev/null; done; exit 0'


def kill_running(workdirs: Sequence[tuple[Any, str]] | None = None, campaign: str | None = None) -> int:
    """Stop running workloads (on Ctrl-C). Returns how many hosts or process groups were signalled.

    With `workdirs` (pairs of HostSpec and the campaign's work directory on it), only that campaign's
    workloads are stopped, on every host this worker has a connection to: other campaigns sharing the
    worker keep running. Without, every workload this worker process started locally is killed and its
    host connections are closed.
    """
    environments.release_guests(campaign)
    if workdirs is not None:
        n = 0
        for spec, workdir in workdirs:
            with _lock:
                host = _hosts.get(spec)
            if host is None:
                continue
            try:
                host.run(["sh", "-c", _KILL_BY_CWD, "sh", workdir], timeout=KILL_TIMEOUT_S)
                n += 1
            except RunnerError:
                pass  # the host is gone; its remote `timeout` stops the workload
        return n
    n = 0
    for pgid in list(running_groups()):
        try:
            os.killpg(pgid, signal.SIGKILL)
            n += 1
        except ProcessLookupError:
            pass
    with _lock:
        hosts = list(_hosts.values())
    for host in hosts:
        try:
            host.close()
        except Exception:  # noqa: BLE001
            pass
    return n
