"""The probe contract and its registry.

A probe is a per-trial collector of telemetry that explains a result (lock contention, context switches,
run delay, KVM exits, clock frequency). It is a subclass of `Probe` registered with `@register("name")`,
selected in the matrix (`probes: [perf_stat, schedstat]`). The runner calls it in this order, always on a
`Host` (this machine, an SSH host, a guest, a container: the probe never knows which) and with plain data:

1. `check(host, ctx)` once per host, side and worker process: None when the probe can run there, else a
   one-line reason (no `perf`, a kernel without CONFIG_LOCK_STAT, no debugfs). An unavailable probe is
   reported once and skipped on that host; the trial runs as if it had not been asked for.
2. `start(host, ctx)` right before the workload command: read counters, or start a sampler in the
   background (`Background`). Returns a state (any value) that is handed to `stop`.
3. `stop(host, ctx, state)` right after the workload command, also when it failed or timed out: stop what
   `start` started and return the readings as a list of `Metric` (runner.workloads.base), names prefixed
   with the probe's name (`perf_stat.context_switches`). The runner sets their `probe` and `side`
   columns. Parsing the captured text is a pure function of the module, tested on real output in
   tests/data/probes/.

Each call is bounded by the probe's `timeout` (seconds): a probe that raises or runs past it is reported
and its readings of that trial are left out; the trial's own result is kept. Commands a probe runs on the
host take that timeout too (`host.run(..., timeout=self.timeout)`), so nothing of it outlives the trial.

`ProbeContext.side` says where the probe reads: `host` (the machine the workload runs on, or the hypervisor
host of a guest) or `guest` (inside the guest). A probe lists the sides it means something on in `sides`
(kvm_exits: only `host`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from runner.hosts.base import Host, Spawned
from runner.records.metric import Metric
from runner.registry import Registry

SIDES = ("host", "guest")


@dataclass(frozen=True)
class ProbeContext:
    """What a probe knows about the trial it watches."""

    host: str  # the Host's name
    side: str  # host | guest
    workdir: str  # the campaign's work directory on that host: the workload runs with it as its cwd
    scratch: str  # a directory on the host for the probe's files (created by the runner)
    tag: str  # unique per trial attempt and side: names the probe's files in `scratch`
    # Processes to watch besides those whose cwd is `workdir`: substrings of their command line (e.g. the
    # names of the guests whose QEMU process holds the vCPU threads).
    processes: tuple[str, ...] = ()
    cpus: tuple[int, ...] | None = None  # the CPUs the trial uses; None: all online CPUs

    def file(self, probe: str, what: str = "out") -> str:
        return f"{self.scratch}/{self.tag}.{probe}.{what}"


class Probe:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    sides: ClassVar[tuple[str, ...]] = SIDES
    timeout: ClassVar[float] = 15.0

    def check(self, host: Host, ctx: ProbeContext) -> str | None:
        """None if the probe can run on this host, else a one-line reason."""
        return None

    def start(self, host: Host, ctx: ProbeContext) -> Any:
        raise NotImplementedError

    def stop(self, host: Host, ctx: ProbeContext, state: Any) -> list[Metric]:
        raise NotImplementedError


# Every module of runner.probes is imported on the first lookup: a new probe is one new module there.
PROBES: Registry[Probe] = Registry("runner.probes", "no probe {name!r}; known: {known}")
_REGISTRY = PROBES.classes  # name -> class (tests register fake probes here)


def register(name: str) -> Callable[[type[Probe]], type[Probe]]:
    return PROBES.register(name)


def known() -> list[str]:
    return PROBES.names()


def get(name: str) -> Probe:
    return PROBES.get(name)


# ----- helpers for probes ------------------------------------------------------------------------------

def read_text(host: Host, argv: Sequence[str], timeout: float, what: str) -> str:
    """stdout of argv on the host; RuntimeError with the command's last line when it fails."""
    res = host.run(list(argv), timeout=timeout)
    if not res.ok:
        raise RuntimeError(f"{what}: {'timed out' if res.timed_out else res.tail()}")
    return res.stdout


def has_command(host: Host, name: str, timeout: float) -> bool:
    return host.run(["sh", "-c", f"command -v {shlex.quote(name)}"], timeout=timeout).ok


# A sampler runs `sample` (a shell script; its arguments follow) every `interval` seconds in the background
# until its stdin closes (Background.stop, or the runner's process dying), then once more, marked `end`.
# The TERM trap ends the loop between two samples (a sample under way is finished, never cut).
# Each sample is preceded by a line '@ <uptime seconds>' ('@end ...' for the last).
_SAMPLER = r"""
out=$1; iv=$2; cmd=$3; shift 3
: > "$out"
( trap 'exit 0' TERM
  while :; do read -r up _ < /proc/uptime; echo "@ $up"; sh -c "$cmd" sh "$@"; sleep "$iv" & wait $!; done ) >> "$out" 2>/dev/null &
loop=$!
cat > /dev/null
kill -TERM $loop 2>/dev/null; wait $loop
{ read -r up _ < /proc/uptime; echo "@end $up"; sh -c "$cmd" sh "$@"; } >> "$out" 2>/dev/null
"""


@dataclass
class Background:
    """A command a probe started on a host that runs until its stdin closes and writes to `path`."""

    host: Host
    path: str
    timeout: float
    proc: Spawned | None = field(default=None, repr=False)

    @classmethod
    def spawn(cls, host: Host, argv: Sequence[str], path: str, timeout: float) -> Background:
        return cls(host, path, timeout, host.spawn(list(argv)))

    @classmethod
    def sampler(cls, host: Host, path: str, interval: float, sample: str, args: Sequence[str], timeout: float) -> Background:
        """Run the shell script `sample` with `args` every `interval` s (see _SAMPLER)."""
        return cls.spawn(host, ["sh", "-c", _SAMPLER, "sampler", path, f"{interval:g}", sample, *args], path, timeout)

    def stop(self) -> str:
        """Close its stdin, wait for it (up to the timeout), and return (and remove) what it wrote."""
        if self.proc is not None:
            self.proc.finish("", timeout=self.timeout)
            self.proc = None
        return read_text(self.host, ["sh", "-c", 'cat "$1"; rm -f "$1"', "sh", self.path], self.timeout, "probe output")


def parse_samples(text: str) -> list[tuple[str, float, list[str]]]:
    """The samples of a sampler's output (pure): [(marker, uptime, lines)]."""
    out: list[tuple[str, float, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("@"):
            mark, _, t = line.partition(" ")
            try:
                out.append((mark, float(t), []))
            except ValueError:
                continue
        elif out and line.strip():
            out[-1][2].append(line)
    return out
