"""host_state: the state of the host right before a trial, the things that make two measurements comparable
or not and that can change under a running campaign: the cpufreq governor, turbo/boost, automatic NUMA
balancing, irqbalance, the load of other processes, and the thermal throttling counters.

Every canary run reads it (runner.execution.canary), so each batch of trials between two canary runs has its
host state on record; `probes: [host_state]` reads it around every trial. The facts taken at launch
(runner.provision.fingerprint) say what the host is; this says what it was doing, batch by batch. It reads
what the fingerprint reads for governors and turbo (cpufreq policies; intel_pstate/no_turbo, else
cpufreq/boost) and the throttle counters the cpufreq probe reads, plus /proc/sys/kernel/numa_balancing,
/proc/loadavg and two readings of /proc/stat `SAMPLE_S` apart while no trial runs (the busy share of the
CPUs then is other processes' load).
"""

from __future__ import annotations

from typing import Any

from runner.hosts.base import Host
from runner.probes.base import Probe, ProbeContext, read_text, register
from runner.records.metric import Metric

SAMPLE_S = 0.25  # seconds between the two /proc/stat readings (the trial waits that long once more)

_READ = r"""
for g in /sys/devices/system/cpu/cpufreq/policy[0-9]*/scaling_governor; do
  [ -r "$g" ] && read -r v < "$g" && echo "governor $v"; done
if [ -r /sys/devices/system/cpu/intel_pstate/no_turbo ]; then read -r v < /sys/devices/system/cpu/intel_pstate/no_turbo; echo "no_turbo $v"
elif [ -r /sys/devices/system/cpu/cpufreq/boost ]; then read -r v < /sys/devices/system/cpu/cpufreq/boost; echo "boost $v"; fi
[ -r /proc/sys/kernel/numa_balancing ] && read -r v < /proc/sys/kernel/numa_balancing && echo "numa_balancing $v"
irq=0
for c in /proc/[0-9]*/comm; do read -r n 2>/dev/null < "$c" || continue; [ "$n" = irqbalance ] && { irq=1; break; }; done 2>/dev/null
echo "irqbalance $irq"
t=
for c in /sys/devices/system/cpu/cpu[0-9]*/thermal_throttle; do
  [ -r "$c/core_throttle_count" ] && read -r a < "$c/core_throttle_count" || continue
  p=0; [ -r "$c/package_throttle_count" ] && read -r p < "$c/package_throttle_count"
  t=$(( ${t:-0} + a + p )); done
[ -n "$t" ] && echo "throttle $t"
read -r l < /proc/loadavg; echo "loadavg $l"
while read -r k rest; do [ "$k" = cpu ] && { echo "stat0 $rest"; break; }; done < /proc/stat
sleep "$1"
while read -r k rest; do [ "$k" = cpu ] && echo "stat1 $rest"; [ "$k" = procs_running ] && echo "procs_running $rest"; done < /proc/stat
exit 0
"""


@register("host_state")
class HostState(Probe):
    description = "governor, turbo, NUMA balancing, irqbalance, other processes' load and throttle counts before the trial"
    sides = ("host",)  # the state of the machine: for a guest trial, its hypervisor host's
    timeout = 15.0

    def start(self, host: Host, ctx: ProbeContext) -> Any:
        return parse_state(read_text(host, ["sh", "-c", _READ, "host_state", f"{SAMPLE_S:g}"], self.timeout, "host state"))

    def stop(self, host: Host, ctx: ProbeContext, state: Any) -> list[Metric]:
        return list(state)


def parse_state(text: str) -> list[Metric]:
    """The rows of one reading (pure): `host_state.governor.<name>` (cpufreq policies with that governor),
    `.turbo` (1 on, 0 off), `.numa_balancing` (the sysctl's value), `.irqbalance` (1 running), `.throttle_count`
    (thermal throttle events since boot, CPUs summed), `.load1`, `.procs_running` (runnable tasks besides the
    reader) and `.busy` (share of CPU time busy between the two /proc/stat readings). What the host lacks is
    left out."""
    governors: dict[str, int] = {}
    out: list[Metric] = []
    stat: dict[str, list[int]] = {}
    for line in text.splitlines():
        key, _, rest = line.strip().partition(" ")
        fields = rest.split()
        if not fields:
            continue
        if key == "governor":
            governors[fields[0]] = governors.get(fields[0], 0) + 1
        elif key in ("no_turbo", "boost") and fields[0] in ("0", "1"):
            on = (fields[0] == "1") == (key == "boost")
            out.append(Metric("host_state.turbo", 1.0 if on else 0.0, "bool", None))
        elif key in ("numa_balancing", "irqbalance", "throttle") and fields[0].isdigit():
            name = "throttle_count" if key == "throttle" else key
            out.append(Metric(f"host_state.{name}", float(fields[0]), "events" if key == "throttle" else ("bool" if key == "irqbalance" else "mode"), None))
        elif key == "loadavg" and _number(fields[0]):
            out.append(Metric("host_state.load1", float(fields[0]), "tasks", False))
        elif key in ("stat0", "stat1") and all(f.isdigit() for f in fields):
            stat[key] = [int(f) for f in fields]
        elif key == "procs_running" and fields[0].isdigit():
            out.append(Metric("host_state.procs_running", float(max(0, int(fields[0]) - 1)), "tasks", False))
    out += [Metric(f"host_state.governor.{g}", float(n), "policies", None) for g, n in sorted(governors.items())]
    if "stat0" in stat and "stat1" in stat and (busy := _busy(stat["stat0"], stat["stat1"])) is not None:
        out.append(Metric("host_state.busy", busy, "fraction", False))
    return sorted(out, key=lambda m: m.name)


def _busy(before: list[int], after: list[int]) -> float | None:
    """Busy share of CPU time between two `cpu` lines of /proc/stat (user nice system idle iowait irq softirq
    steal [guest guest_nice]; guest time is already in user and nice)."""
    n = min(len(before), len(after), 8)
    if n < 4:
        return None
    delta = [after[i] - before[i] for i in range(n)]
    total = sum(delta)
    if total <= 0:
        return None
    idle = delta[3] + (delta[4] if n > 4 else 0)
    return max(0.0, min(1.0, (total - idle) / total))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
