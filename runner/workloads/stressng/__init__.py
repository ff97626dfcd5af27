"""stressng: stress-ng's kernel-lock stressors (futex, flock, lockofd, pipe, mmap, fault, ...) as a workload.

Where the lockbench threads contend for a lock in user space, these stressors make the kernel take its
own locks (futex hash buckets, file lock lists, pipe mutexes, mmap_lock, page table locks): inside a guest,
that is the guest kernel's spinlocks, the variable of the lab's study (docs/workloads.md, `## stressng`).

stress-ng is the Debian package `stress-ng`, installed on hosts by the host playbooks (role `stressng`)
and in the `debian` guest image; the `minimal` guest image has none, so a guest or container trial with it
is refused at plan time. `prepare` checks, once per host (and guest boot) and campaign, that stress-ng is
there and which stressors it knows; a trial of a stressor it does not know fails with one line naming the
host and the known ones. Metrics come from stress-ng's YAML (`--metrics --yaml`), parsed by `parse.py`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from typing import Any

from runner import defaults
from runner.errors import ProvisionError, TrialError, UsageError
from runner.hosts.base import CommandResult, Host
from runner.provision import environments
from runner.records.metric import Metric
from runner.workloads.base import Workload, WorkloadContext, register, run_pid_file, signal_by_pid_file
from runner.workloads.stressng.parse import EXIT_LINE, WORKERS_LINE, parse_run, stressor_list, unknown_stressor

PACKAGE = "stress-ng"  # the Debian package
BINARY = "stress-ng"
DEFAULT_STRESSOR = "futex"
DEFAULT_DURATION = 10
# The stressors that hammer kernel locks, and the lock each one hits (docs/workloads.md says more).
KERNEL_LOCK_STRESSORS: dict[str, str] = {
    "futex": "futex hash bucket spinlock (hb->lock) on every wait and wake",
    "flock": "one file's lock context spinlock (flc_lock), shared by every worker, BSD flock()",
    "lockofd": "flc_lock and blocked_lock_lock, open file description locks (F_OFD_SETLK)",
    "lockf": "flc_lock and blocked_lock_lock, POSIX record locks (lockf/F_SETLK)",
    "fcntl": "flc_lock, POSIX locks and the file table lock (files->file_lock)",
    "pipe": "the pipe's mutex and its wait queue spinlocks",
    "mmap": "the process's mmap_lock (rw-semaphore) for writing, and the page table lock",
    "fault": "mmap_lock for reading, the page table spinlock and the LRU lock on every page fault",
    "sem-sysv": "the System V semaphore array's spinlock (sem_lock)",
    "msg": "the System V message queue's spinlock (ipc lock)",
    "eventfd": "the eventfd's wait queue spinlock",
}
_STRESSOR = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# Stressors the stress-ng on each host knows, read by prepare() (once per host, guest boot and campaign),
# checked by command(): (host name, work directory) -> names. Filled in the worker process that runs the
# host's trials, where prepare() always runs before the trial's command() (runner.execution.environments).
_known: dict[tuple[str, str], tuple[str, ...]] = {}
_known_lock = threading.Lock()


def settings(params: Mapping[str, Any], cpus: int) -> tuple[str, int, int]:
    """(stressor, workers, duration in whole seconds) with defaults: workers = the trial's CPUs. stress-ng
    runs whole seconds (it truncates 1.5 to 1): a fractional duration (the runner's over-commit window
    hands one) is rounded up."""
    stressor = str(params.get("stressor", DEFAULT_STRESSOR))
    workers = int(params.get("workers", cpus))
    duration = max(1, math.ceil(float(params.get("duration", DEFAULT_DURATION))))
    return stressor, workers, duration


# Runs stress-ng with its log on stderr and its YAML in a private file, then prints the YAML on stdout and
# stress-ng's exit status on stderr; exits 0 so that parse() judges the run from stress-ng's own words.
# $1: work directory, $2: pid file ("" for none), $3: workers (said on stderr for parse()), the rest:
# stress-ng's argv. stress-ng runs in the background so that its pid can be written for stop_argv (SIGINT
# ends its run, and it reports what it did: stress-ng sets its own SIGINT handler, so the shell's ignoring
# SIGINT for background commands does not reach it).
_RUN = (
    'dir=$1; pidf=$2; workers=$3; shift 3; y=$(mktemp "$dir/stressng.XXXXXX") || exit 1; '
    '"$@" --yaml "$y" </dev/null 1>&2 & p=$!; '
    '[ -n "$pidf" ] && echo "$p" >"$pidf"; '
    'wait "$p"; rc=$?; cat "$y"; rm -f "$y"; [ -n "$pidf" ] && rm -f "$pidf"; '
    f'echo "{WORKERS_LINE}$workers" >&2; echo "{EXIT_LINE}$rc" >&2; exit 0'
)


def trial_argv(params: Mapping[str, Any], ctx: WorkloadContext) -> list[str]:
    """The argv of one trial: every value its own element, never pasted into the shell text."""
    stressor, workers, duration = settings(params, ctx.cpus)
    stress = [BINARY, f"--{stressor}", str(workers), "--timeout", f"{duration}s", "--metrics"]
    return ["sh", "-c", _RUN, "stressng", ctx.workdir, run_pid_file(ctx, "stressng") or "", str(workers), *stress]


def check_stressor(stressor: str, ctx: WorkloadContext) -> None:
    """TrialError with one line naming the host and its stressors if the host's stress-ng lacks `stressor`
    (nothing to check if prepare() did not list them in this process)."""
    with _known_lock:
        known = _known.get((ctx.host, ctx.workdir))
    if known is not None and (msg := unknown_stressor(stressor, known, ctx.host)) is not None:
        raise TrialError(msg)


@register("stressng")
class StressNG(Workload):
    description = "stress-ng kernel-lock stressors (futex, flock, lockofd, pipe, mmap, fault, ...): bogo-ops/s"
    # throughput (bogo-ops/s) scales with load; aggregate_throughput is the guests' sum the runner adds under
    # over-commit. Not throughput_per_worker (per worker already: an efficiency), ops_per_cpu_second (per CPU
    # time), bogo_ops (a count over the run), durations, usage or the stressors' own figures.
    scaling_metrics = frozenset({"throughput", "aggregate_throughput"})
    # Across over-committed guests its `throughput` adds up (Workload.combine_vms's default), with Jain's index.
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "stressor": {"type": "string", "pattern": _STRESSOR.pattern,
                         "description": f"stress-ng stressor (default {DEFAULT_STRESSOR}); kernel-lock ones: "
                                        f"{', '.join(KERNEL_LOCK_STRESSORS)} (docs/workloads.md)"},
            "workers": {"x-cpus": True, "type": "integer", "minimum": 1, "maximum": 4096,
                        "description": "stressor instances (may be relative, e.g. \"100%\": of the trial's CPUs: vcpus if "
                                       "given (a guest's vCPUs, a container's cpuset), else the host's CPUs); default all"},
            "duration": {"type": "integer", "minimum": 1, "maximum": 3600,
                         "description": f"seconds of stress-ng's run (--timeout; default {DEFAULT_DURATION})"},
        },
    }

    window_param = "duration"
    window_default = float(DEFAULT_DURATION)

    def validate(self, params: Mapping[str, Any]) -> None:
        env = str(params.get("env", defaults.ENV))
        image = str(params.get("guest_image", "minimal"))
        if environments.get(env).starts_guests and image == "minimal":
            raise UsageError(f"guest_image: the stressng workload needs stress-ng in the guest; env {env!r} with the "
                             "'minimal' image has none: set guest_image: debian")

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        return float(max(1, math.ceil(float(params.get("duration", DEFAULT_DURATION))))) + 0.5

    def prepare(self, host: Host, ctx: WorkloadContext) -> None:
        """stress-ng must be there; read which stressors it knows (for command())."""
        # Through sh: a missing binary is status 127 on every kind of host (a local one would raise).
        listed = host.run(["sh", "-c", 'command -v "$1" >/dev/null || exit 127; exec "$1" --stressors', "sh", BINARY],
                          timeout=60)
        if listed.rc == 127:
            raise ProvisionError(f"{host.name}: stress-ng is not installed there (Debian package {PACKAGE!r}: "
                                 f"apt-get install {PACKAGE}, or let the host playbooks install it)")
        if not listed.ok:
            raise ProvisionError(f"{host.name}: stress-ng --stressors failed (status {listed.rc}): {listed.tail()}")
        names = stressor_list(listed.stdout)
        if not names:
            raise ProvisionError(f"{host.name}: stress-ng --stressors listed no stressor")
        with _known_lock:
            _known[(host.name, ctx.workdir)] = tuple(names)

    def stop_argv(self, ctx: WorkloadContext) -> list[str] | None:
        """SIGINT ends stress-ng's run at once; it reports over the time it ran. The run is the one of
        ctx.extra["run_id"] (none: it cannot be stopped), named by the pid file the trial's command writes
        and checked by name in /proc before the signal (signal_by_pid_file)."""
        pid_file = run_pid_file(ctx, "stressng")
        if pid_file is None:
            return None
        return signal_by_pid_file(pid_file, BINARY, "INT", "stressng-stop")

    def command(self, params: Mapping[str, Any], ctx: WorkloadContext) -> list[str]:
        check_stressor(str(params.get("stressor", DEFAULT_STRESSOR)), ctx)
        return trial_argv(params, ctx)

    def parse(self, result: CommandResult, params: Mapping[str, Any]) -> list[Metric]:
        # k > 1 guests run in one common window (runner.execution.guests.window_plan): a starved guest's 0 is data
        windowed = int(params.get("vms", 1) or 1) > 1
        return parse_run(result.stdout, result.stderr, str(params.get("stressor", DEFAULT_STRESSOR)), windowed=windowed)
