"""perf_stat: cycles, instructions, context switches and CPU migrations over the trial, system wide
(`perf stat -a`, or `-C` on the trial's CPUs when they are known), with linux-perf where it is installed.

Hardware counters that the machine does not expose (most guests, many clouds) read `<not supported>` and
are left out; the software counters (context switches, migrations) are always there.
"""

from __future__ import annotations

from typing import Any

from runner.hosts.base import Host
from runner.probes.base import Background, Probe, ProbeContext, has_command, register
from runner.records.metric import Metric

EVENTS = ("cycles", "instructions", "context-switches", "cpu-migrations")
_UNITS = {"cycles": "cycles", "instructions": "instructions", "context-switches": "switches", "cpu-migrations": "migrations"}

# perf counts for as long as `cat` runs, and cat runs until the runner closes its stdin.
_RUN = 'out=$1; shift; exec perf stat -x, -o "$out" "$@" -- cat > /dev/null'


@register("perf_stat")
class PerfStat(Probe):
    description = "cycles, instructions, context switches, CPU migrations (perf stat, system wide)"
    timeout = 15.0

    def check(self, host: Host, ctx: ProbeContext) -> str | None:
        if not has_command(host, "perf", self.timeout):
            return "no perf command (install linux-perf / linux-tools)"
        res = host.run(["perf", "stat", "-a", "-x,", "-e", "context-switches", "--", "true"], timeout=self.timeout)
        if not res.ok:
            return f"perf stat -a refused: {res.tail()} (kernel.perf_event_paranoid, or run as root)"
        return None

    def start(self, host: Host, ctx: ProbeContext) -> Any:
        where = ["-C", ",".join(map(str, ctx.cpus))] if ctx.cpus else ["-a"]
        out = ctx.file(self.name, "csv")
        return Background.spawn(host, ["sh", "-c", _RUN, "perf_stat", out, *where, "-e", ",".join(EVENTS)], out, self.timeout)

    def stop(self, host: Host, ctx: ProbeContext, state: Any) -> list[Metric]:
        return to_metrics(parse_perf_csv(state.stop()))


def parse_perf_csv(text: str) -> dict[str, float]:
    """Counter values of `perf stat -x,` output (pure): event -> count; unsupported or uncounted events are
    left out, and modifiers (`cycles:u`) dropped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) < 3:
            continue
        value, event = fields[0].strip(), fields[2].strip().split(":")[0]
        try:
            out[event] = float(value)
        except ValueError:  # <not supported>, <not counted>
            continue
    return out


def to_metrics(counts: dict[str, float]) -> list[Metric]:
    out = [Metric(f"perf_stat.{e.replace('-', '_')}", counts[e], _UNITS[e], None) for e in EVENTS if e in counts]
    if counts.get("cycles") and "instructions" in counts:
        out.append(Metric("perf_stat.ipc", counts["instructions"] / counts["cycles"], "instructions/cycle", None))
    return out
