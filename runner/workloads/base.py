"""The workload contract and its registry.

A workload plugin is a subclass of `Workload` registered with `@register("name")`. The runner calls it in
this order, always with plain data:

1. `validate(params)` once per campaign at planning time, with the workload's fixed parameters merged
   with one cell's axis values. Raise `UsageError` naming the bad key; the matrix loader prefixes the file.
2. `estimate_seconds(params)` at planning time: a rough wall time of one trial, for the plan and progress.
3. `prepare(host, ctx)` once per campaign on every host (and guest) before its first trial: copy or build
   what the workload needs into `ctx.workdir` on that host. It must be idempotent (a resumed campaign
   calls it again). Raise `ProvisionError` with a message naming the host when it cannot prepare.
4. `command(params, ctx)` for every trial: the argv to run (a list; never a shell string with values
   pasted in). `ctx.cpus` is the number of CPUs the trial may use on its host.
5. `guest_files(build_dir)` when the trial runs in a guest or container: the files the workload needs
   inside a minimal guest (busybox, no compiler), guest path -> local file, built into `build_dir` if
   needed; they are baked into the guest or container image. `prepare` then runs on the guest as on any
   host, with `ctx.workdir` = GUEST_WORKDIR, once per guest boot: a prepare that finds its files there
   does nothing. The environment never knows a workload by name.
   Over-commit with k guests measures over one window: a workload that names its measuring time
   (`window_param`, e.g. "duration") and how to end a running measurement early (`stop_argv`) is started
   in every guest with a longer time and stopped in all of them at one instant by the runner.
6. `parse(result, params)` with the finished CommandResult: a list of `Metric`. A pure function of the
   captured output, tested in tests/ on real output kept in tests/data/. Raise `TrialError` when the
   output cannot be understood.

A plugin whose optional dependency is missing still registers; `missing()` says what is missing, and the
runner refuses to plan a campaign with it, quoting that message.

A plugin says which of its metrics scale with load like a throughput (`scaling_metrics`): the report fits a
scalability law and draws speedup and efficiency for those only, never for a fairness index, steal time,
a duration or a count. The totals the runner adds across over-committed guests keep these names.

A plugin says how its metrics add up over the k guests of an over-committed trial (`combine_vms`): the
runner calls it with each guest's metrics and records what it returns as the trial's totals (vm null).
`Metric`, the row type, lives in runner.records.metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from runner.hosts.base import CommandResult, Host
from runner.records.metric import Metric, added_up
from runner.registry import Registry

GUEST_WORKDIR = "/opt/runner"  # the workload's directory inside a guest or container


@dataclass(frozen=True)
class WorkloadContext:
    """What a workload knows about the place it runs in."""

    host: str
    workdir: str  # campaign working directory on the host (created by the runner)
    cpus: int  # CPUs the trial may use (host cores, container cpuset size, or guest vCPUs)
    extra: Mapping[str, Any] = field(default_factory=dict)


class Workload:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # JSON Schema (draft 2020-12) of the workload's parameters, used to validate the matrix.
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    # Metrics that scale with load like a throughput (work per unit of time, higher is better): the report fits
    # the USL and draws speedup and efficiency for these only. None: the workload cannot say (its metrics are
    # the user's, as for `command`), and the report treats every higher-is-better metric as one that scales.
    scaling_metrics: ClassVar[frozenset[str] | None] = None

    def missing(self) -> str | None:
        """None if usable here, else a one-line reason (e.g. a missing optional dependency)."""
        return None

    def validate(self, params: Mapping[str, Any]) -> None:
        """Extra checks beyond params_schema; raise UsageError."""

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        return 10.0

    def prepare(self, host: Host, ctx: WorkloadContext) -> None:
        """Put what the workload needs on the host. Idempotent."""

    def plan_warnings(self, params: Mapping[str, Any], memory_mib: int | None, shm_mib: int | None) -> list[str]:
        """One-line warnings `runner plan` shows for a cell's resolved parameters (something that will likely fail
        where it runs, such as a copy that cannot fit the environment's memory). `memory_mib` is the memory limit
        the trial runs under and `shm_mib` what its /dev/shm can hold (None: no limit; the environment says:
        runner.provision.environments). Default: none. Pure."""
        return []

    # The parameter holding the seconds of measurement, and its default (None: cannot be windowed).
    window_param: ClassVar[str | None] = None
    window_default: ClassVar[float] = 1.0

    def stop_argv(self, ctx: WorkloadContext) -> list[str] | None:
        """A command that, run on the workload's host, ends its running measurement now and lets it report
        (None: it cannot be stopped early)."""
        return None

    def guest_files(self, build_dir: Path) -> Mapping[str, Path]:
        """Files to bake into a guest or container image: guest path -> local file. Default: none."""
        return {}

    def command(self, params: Mapping[str, Any], ctx: WorkloadContext) -> list[str]:
        raise NotImplementedError

    def parse(self, result: CommandResult, params: Mapping[str, Any]) -> list[Metric]:
        raise NotImplementedError

    def combine_vms(self, per_vm: Sequence[Sequence[Metric]]) -> list[Metric]:
        """The totals (vm None) of a trial over k over-committed guests, from each guest's parsed metrics
        (per_vm[i]: guest i's). The runner adds them to the per-guest rows and its own telemetry; it knows
        no metric name. Default: a `throughput` adds up over the guests (also as `aggregate_throughput`),
        with Jain's index of the guests' throughputs (`vm_jain`)."""
        return added_up(per_vm, "throughput", "aggregate_throughput")


def run_pid_file(ctx: WorkloadContext, stem: str) -> str | None:
    """Where the run of ctx.extra["run_id"] writes its pid for `stop_argv` (`<workdir>/<stem>.<run id>.pid`);
    None without a run id (the run is not stopped early, so no pid file)."""
    run_id = ctx.extra.get("run_id")
    return None if run_id is None else f"{ctx.workdir}/{stem}.{run_id}.pid"


def signal_by_pid_file(pid_file: str, comm: str, signal: str, name: str) -> list[str]:
    """A stop_argv: send `signal` (e.g. "USR1") to the process whose pid `pid_file` holds, once /proc says
    its name is `comm` (the first 15 characters of the program's name), so a stale pid never reaches
    another process. Shell builtins only (in a busy emulated guest each started process costs a lot); it
    looks for up to about 15 s, in case the run has not started yet. `name`: the script's $0."""
    script = (
        'i=0; while [ "$i" -lt 300 ]; do '
        'if [ -r "$1" ] && read -r p <"$1" && [ -r "/proc/$p/comm" ] && read -r n <"/proc/$p/comm" '
        f'&& [ "$n" = "$2" ]; then kill -{signal} "$p" && exit 0; fi; '
        'i=$((i+1)); sleep 0.05; done; exit 1'
    )
    return ["sh", "-c", script, name, pid_file, comm[:15]]


# Every module of runner.workloads is imported on the first lookup: a new workload is one new module there.
WORKLOADS: Registry[Workload] = Registry("runner.workloads", "no workload {name!r}; known: {known}")


def register(name: str) -> Callable[[type[Workload]], type[Workload]]:
    return WORKLOADS.register(name)


def scaling_metrics() -> dict[str, frozenset[str]]:
    """Workload name -> its metrics that scale, for every known workload that says (see Workload.scaling_metrics);
    what `runner report` hands to runner.analysis.build_report."""
    WORKLOADS.load()
    return {name: cls.scaling_metrics for name, cls in sorted(WORKLOADS.classes.items()) if cls.scaling_metrics is not None}


def known() -> list[str]:
    return WORKLOADS.names()


def get(name: str) -> Workload:
    return WORKLOADS.get(name)
