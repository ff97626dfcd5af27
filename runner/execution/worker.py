"""What a Dask worker does for one attempt of one trial. Never raises for a failed trial: it returns a record.

Runs inside Dask worker processes (local or remote `dask worker`s), so everything it gets and returns is
plain, picklable data. Connections to hosts and the per-campaign preparation of a workload on a host are
cached in the worker process and reused across trials.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from runner.errors import HostError, RunnerError, TrialError
from runner.execution import environments
from runner.execution.hosts import Host
from runner.records.store import AttemptRecord
from runner.trials import Trial
from runner.workloads import base
from runner.workloads.base import WorkloadContext


@dataclass(frozen=True)
class AttemptSpec:
    trial: Trial
    attempt: int
    host: Any  # runner.provision.inventory.HostSpec
    timeout: float
    workdir: str  # campaign working directory on the host


_lock = threading.Lock()
_hosts: dict[Any, Host] = {}


def _host(spec: Any) -> Host:
    from runner.provision.inventory import connect

    with _lock:
        host = _hosts.get(spec)
        if host is None:
            host = _hosts[spec] = connect(spec)
        return host


def _forget(spec: Any) -> None:
    with _lock:
        host = _hosts.pop(spec, None)
    environments.forget_host(spec.name)
    if host is not None:
        try:
            host.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass


def host_cpus(host: Host) -> int:
    """Online CPUs of a host (what relative values such as '50%' refer to)."""
    res = host.run(["getconf", "_NPROCESSORS_ONLN"], timeout=30)
    if not res.ok:
        raise HostError(f"{host.name}: cannot count CPUs: {res.stderr.strip() or res.rc}")
    return int(res.stdout.strip())


def execute(spec: AttemptSpec) -> AttemptRecord:
    trial = spec.trial
    params = trial.param_dict
    started = time.time()
    t0 = time.monotonic()
    workload_wall = None

    def record(status: str, error: str | None, kind: str | None, metrics: tuple = (), *, accel: str | None = "none", guest_json: str | None = None) -> AttemptRecord:
        return AttemptRecord(
            trial_id=trial.trial_id,
            cell_id=trial.cell_id,
            repetition=trial.repetition,
            attempt=spec.attempt,
            host=spec.host.name,
            status=status,
            error=error,
            started_at=started,
            ended_at=time.time(),
            wall_s=time.monotonic() - t0,
            workload_wall_s=workload_wall,
            params=params,
            env=str(params.get("env", "host")),
            accel=accel,
            guest_json=guest_json,
            failure_kind=kind,
            metrics=metrics,
        )

    plugin = base.get(trial.workload)
    try:
        host = _host(spec.host)
        ctx = WorkloadContext(host=host.name, workdir=spec.workdir, cpus=host_cpus(host), extra={"campaign": trial.campaign, "trial_id": trial.trial_id})
        run_env = environments.get(str(params.get("env", "host")))
        outcome = run_env(host, plugin, params, ctx, spec.timeout)
        workload_wall = outcome.workload_wall_s
        kind = {"ok": None, "timeout": "timeout"}.get(outcome.status, "failed")
        return record(outcome.status, outcome.error, kind, outcome.metrics, accel=outcome.accel, guest_json=outcome.guest_json)
    except HostError as exc:
        _forget(spec.host)
        return record("failed", str(exc), "host")
    except TrialError as exc:
        return record("failed", str(exc), "failed")
    except RunnerError as exc:
        return record("failed", str(exc), "failed")
    except Exception as exc:  # noqa: BLE001 - a bug must not cost the campaign; the record keeps it
        last = traceback.format_exception_only(exc)[-1].strip()
        return record("failed", f"{spec.host.name}: internal error: {last}", "failed")


def kill_running() -> int:
    """Stop every workload this worker process started (on Ctrl-C). Returns how many were signalled."""
    from runner.execution.hosts import running_groups

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
