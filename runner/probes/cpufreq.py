"""cpufreq: the clock frequency of the CPUs the trial uses, sampled during the trial, and the thermal
throttling events counted over it.

Frequency is read from /sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq, or, where there is no cpufreq
driver (many guests and virtual machines), from the `cpu MHz` lines of /proc/cpuinfo; throttling from
/sys/devices/system/cpu/cpu*/thermal_throttle/{core,package}_throttle_count (x86 with the therm driver;
left out where absent). The CPUs are the trial's own when known, else every online CPU.
"""

from __future__ import annotations

from typing import Any

from runner.hosts.base import Host
from runner.probes.base import Background, Probe, ProbeContext, parse_samples, register
from runner.records.metric import Metric

SAMPLE_S = 1.0

# Prints 'F <cpu> <kHz>' per CPU and 'T <cpu> <core count> <package count>' where throttle counters exist.
_SAMPLE = r"""
found=
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  n=${c##*/cpu}
  if [ -r "$c/cpufreq/scaling_cur_freq" ] && read -r f < "$c/cpufreq/scaling_cur_freq"; then echo "F $n $f"; found=1; fi
  if [ -r "$c/thermal_throttle/core_throttle_count" ] && read -r t < "$c/thermal_throttle/core_throttle_count"; then
    p=0; [ -r "$c/thermal_throttle/package_throttle_count" ] && read -r p < "$c/thermal_throttle/package_throttle_count"
    echo "T $n $t $p"; fi
done
[ -n "$found" ] || awk -F: '/^processor/{p=$2+0} /^cpu MHz/{printf "F %d %d\n", p, $2*1000}' /proc/cpuinfo
"""


@register("cpufreq")
class Cpufreq(Probe):
    description = "frequency (scaling_cur_freq or /proc/cpuinfo) and thermal throttle counts of the CPUs used"
    timeout = 15.0

    def check(self, host: Host, ctx: ProbeContext) -> str | None:
        res = host.run(["sh", "-c", _SAMPLE], timeout=self.timeout)
        if not res.ok or not any(line.startswith("F ") for line in res.stdout.splitlines()):
            return "no CPU frequency readable (no cpufreq driver and no 'cpu MHz' in /proc/cpuinfo)"
        return None

    def start(self, host: Host, ctx: ProbeContext) -> Any:
        return Background.sampler(host, ctx.file(self.name), SAMPLE_S, _SAMPLE, [], self.timeout)

    def stop(self, host: Host, ctx: ProbeContext, state: Any) -> list[Metric]:
        return summarize(parse_samples(state.stop()), ctx.cpus)


def summarize(samples: list[tuple[str, float, list[str]]], cpus: tuple[int, ...] | None) -> list[Metric]:
    """Mean, min and max MHz over the samples taken during the trial (the last one, taken after it, only
    if there is no other) and the throttle events between the first and the last sample (pure)."""
    wanted = None if cpus is None else set(cpus)
    during = [s for s in samples if s[0] == "@"] or samples
    mhz = []
    for _, _, lines in during:
        for line in lines:
            f = line.split()
            if len(f) == 3 and f[0] == "F" and f[1].isdigit() and (wanted is None or int(f[1]) in wanted):
                mhz.append(int(f[2]) / 1000)
    out = []
    if mhz:
        out += [Metric("cpufreq.mhz_mean", sum(mhz) / len(mhz), "MHz", True), Metric("cpufreq.mhz_min", min(mhz), "MHz", True),
                Metric("cpufreq.mhz_max", max(mhz), "MHz", True)]
    if samples:
        first, last = _throttles(samples[0][2], wanted), _throttles(samples[-1][2], wanted)
        if first or last:
            events = sum(max(0, last.get(c, 0) - first.get(c, 0)) for c in last)
            out.append(Metric("cpufreq.throttle_events", float(events), "events", False))
    return out


def _throttles(lines: list[str], wanted: set[int] | None) -> dict[int, int]:
    out = {}
    for line in lines:
        f = line.split()
        if len(f) == 4 and f[0] == "T" and all(x.isdigit() for x in f[1:]) and (wanted is None or int(f[1]) in wanted):
            out[int(f[1])] = int(f[2]) + int(f[3])
    return out
