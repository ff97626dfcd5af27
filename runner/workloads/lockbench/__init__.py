"""lockbench: the project's C lock microbenchmark (lockbench.c beside this file).

Threads play vCPUs and the kernel scheduler plays the hypervisor: with more threads than cores, FIFO locks
(ticket, MCS) hand the lock to preempted waiters and collapse, which is the user-space analogue of vCPU
over-commit. The source is compiled on each host with its own compiler, once per campaign and source version.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from runner.errors import ProvisionError
from runner.hosts.base import CommandResult, Host
from runner.records.metric import Metric
from runner.workloads.base import GUEST_WORKDIR, Workload, WorkloadContext, register, run_pid_file, signal_by_pid_file
from runner.workloads.lockbench.parse import parse_output, to_metrics

LOCKS = ["ttas", "ticket", "mcs", "mutex", "oticket", "spinpark"]


def source_path() -> Path:
    return Path(str(resources.files("runner.workloads.lockbench").joinpath("lockbench.c")))


def binary_name() -> str:
    digest = hashlib.sha256(source_path().read_bytes()).hexdigest()[:12]
    return f"lockbench-{digest}"


@register("lockbench")
class Lockbench(Workload):
    description = "lock microbenchmark: ttas, ticket, mcs, mutex, oticket, spinpark under N threads"
    # Not jain_fairness (an index), total_ops or thread_ops (counts over the run), duration_s or stopped_early;
    # aggregate_throughput is the guests' sum the runner adds under over-commit.
    scaling_metrics = frozenset({"throughput", "aggregate_throughput"})
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "lock": {"enum": LOCKS, "description": "lock algorithm"},
            "threads": {"x-cpus": True, "type": "integer", "minimum": 1, "maximum": 4096, "description": "threads contending for the lock (may be relative, e.g. \"100%\": of the trial's CPUs: vcpus if given (a guest's vCPUs, a container's cpuset), else the host's CPUs)"},
            "duration": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "description": "seconds of measurement (default 1)"},
            "cs_work": {"type": "integer", "minimum": 0, "description": "work loop iterations inside the critical section (default 100)"},
            "out_work": {"type": "integer", "minimum": 0, "description": "work loop iterations outside it (default 100)"},
            "spin_threshold": {"type": "integer", "minimum": 0, "description": "spins before oticket steals out of turn / spinpark parks (default 16384)"},
            "thread_pin": {"enum": ["none", "compact"], "description": "pin thread i to the i-th allowed CPU (compact) or not (default none)"},
        },
    }

    window_param = "duration"

    def stop_argv(self, ctx: WorkloadContext) -> list[str] | None:
        """SIGUSR1 ends lockbench's measurement at once; it reports over the time it ran. The run is the
        one of ctx.extra["run_id"] (no run id: it cannot be stopped): its --pid-file, written once its
        SIGUSR1 handler is in place, names the process, checked by name in /proc before the signal
        (signal_by_pid_file: a busy emulated guest can take seconds to start a command)."""
        pid_file = run_pid_file(ctx, binary_name())
        if pid_file is None:
            return None
        return signal_by_pid_file(pid_file, binary_name(), "USR1", "lockbench-stop")

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        return float(params.get("duration", 1.0)) + 0.2

    def prepare(self, host: Host, ctx: WorkloadContext) -> None:
        src = f"{ctx.workdir}/lockbench.c"
        binary = f"{ctx.workdir}/{binary_name()}"
        if host.run(["test", "-x", binary], timeout=30).rc == 0:
            return
        host.put(source_path(), src)
        tmp = f"{binary}.tmp"
        built = host.run(["cc", "-O2", "-pthread", "-o", tmp, src], timeout=300)
        if not built.ok:
            why = (built.stderr.strip().splitlines() or ["no output"])[-1]
            raise ProvisionError(f"{host.name}: cannot build lockbench with cc: {why}")
        host.run(["mv", "-f", tmp, binary], timeout=30)

    def guest_files(self, build_dir: Path) -> dict[str, Path]:
        """A static lockbench (minimal guests have no compiler), where prepare() looks for it."""
        binary = Path(build_dir) / f"{binary_name()}-static"
        if not binary.exists():
            binary.parent.mkdir(parents=True, exist_ok=True)
            tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
            argv = ["cc", "-O2", "-pthread", "-static", "-o", str(tmp), str(source_path())]
            built = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
            if built.returncode:
                why = (built.stderr.strip().splitlines() or ["no output"])[-1]
                raise ProvisionError(f"cannot build a static lockbench for guests (cc -static; needs libc6-dev): {why}")
            os.replace(tmp, binary)
        return {f"{GUEST_WORKDIR}/{binary_name()}": binary}

    def command(self, params: Mapping[str, Any], ctx: WorkloadContext) -> list[str]:
        argv = [f"{ctx.workdir}/{binary_name()}", "--lock", str(params.get("lock", "ticket"))]
        argv += ["--threads", str(params.get("threads", 1)), "--duration", str(params.get("duration", 1.0))]
        for key, flag in (("cs_work", "--cs-work"), ("out_work", "--out-work"), ("spin_threshold", "--spin-threshold")):
            if key in params:
                argv += [flag, str(params[key])]
        argv += ["--pin", str(params.get("thread_pin", "none"))]
        pid_file = run_pid_file(ctx, binary_name())
        if pid_file is not None:
            argv += ["--pid-file", pid_file]
        return argv

    def parse(self, result: CommandResult, params: Mapping[str, Any]) -> list[Metric]:
        return to_metrics(parse_output(result.stdout))
