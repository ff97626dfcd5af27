"""lock_stat: the kernel's lock statistics over the trial, from /proc/lock_stat (kernels built with
CONFIG_LOCK_STAT and `kernel.lock_stat = 1`): total contentions, wait time and acquisitions, and the TOP
lock classes by wait time, as VBENCH recorded them.

The file is copied at the start and read at the end and the two are subtracted, so the statistics are never
cleared (other users of the host keep theirs). Where the kernel lacks it the probe is unavailable: one note
per host, nothing recorded. /proc/lock_stat can be large (MBs on a big machine): its cost is two copies.
"""

from __future__ import annotations

import re
from typing import Any

from runner.hosts.base import Host
from runner.probes.base import Probe, ProbeContext, read_text, register
from runner.records.metric import Metric

TOP = 5
PROC = "/proc/lock_stat"
_SPLIT = "=== runner lock_stat after ==="
# 'class name:  con-bounces contentions waittime-min -max -total -avg acq-bounces acquisitions holdtime...'
_ROW = re.compile(r"^\s*(?P<name>\S.*?):\s+(?P<nums>[0-9.]+(?:\s+[0-9.]+){7,})\s*$")


@register("lock_stat")
class LockStat(Probe):
    description = "kernel lock contention over the trial (/proc/lock_stat deltas, top locks by wait time)"
    timeout = 30.0

    def check(self, host: Host, ctx: ProbeContext) -> str | None:
        if not host.run(["test", "-r", PROC], timeout=self.timeout).ok:
            return f"no {PROC} (kernel without CONFIG_LOCK_STAT)"
        on = host.run(["cat", "/proc/sys/kernel/lock_stat"], timeout=self.timeout)
        if on.ok and on.stdout.strip() == "0":
            return "lock statistics are off (sysctl kernel.lock_stat=1 turns them on)"
        return None

    def start(self, host: Host, ctx: ProbeContext) -> Any:
        path = ctx.file(self.name)
        read_text(host, ["cp", PROC, path], self.timeout, "copy of /proc/lock_stat")
        return path

    def stop(self, host: Host, ctx: ProbeContext, state: Any) -> list[Metric]:
        script = f'cat "$1"; echo "{_SPLIT}"; cat {PROC}; rm -f "$1"'
        text = read_text(host, ["sh", "-c", script, "lock_stat", state], self.timeout, "/proc/lock_stat")
        before, _, after = text.partition(_SPLIT)
        return to_metrics(parse_lock_stat(before), parse_lock_stat(after))


def parse_lock_stat(text: str) -> dict[str, tuple[float, float, float]]:
    """Lock class -> (contentions, wait time total in us, acquisitions) of /proc/lock_stat text (pure).
    Read-write classes appear as 'name-R' and 'name-W'; call-site lines are skipped."""
    out = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m is None:
            continue
        nums = [float(x) for x in m["nums"].split()]
        # version 0.4: con-bounces contentions wait-min wait-max wait-total wait-avg acq-bounces acquisitions ...
        # version 0.3 lacks the averages: con-bounces contentions wait-min wait-max wait-total acq-bounces acquisitions ...
        contentions, wait_total, acquisitions = (nums[1], nums[4], nums[7]) if len(nums) >= 12 else (nums[1], nums[4], nums[6])
        out[m["name"].strip()] = (contentions, wait_total, acquisitions)
    return out


def to_metrics(before: dict[str, tuple[float, float, float]], after: dict[str, tuple[float, float, float]]) -> list[Metric]:
    delta = {}
    for name, (c, w, a) in after.items():
        c0, w0, a0 = before.get(name, (0.0, 0.0, 0.0))
        if c >= c0 and w >= w0 and a >= a0:
            delta[name] = (c - c0, w - w0, a - a0)
    out = [
        Metric("lock_stat.contentions", sum(d[0] for d in delta.values()), "contentions", False),
        Metric("lock_stat.wait_us", sum(d[1] for d in delta.values()), "us", False),
        Metric("lock_stat.acquisitions", sum(d[2] for d in delta.values()), "acquisitions", None),
    ]
    top = sorted((n for n in delta if delta[n][1] > 0), key=lambda n: (-delta[n][1], n))[:TOP]
    for name in top:
        out += [Metric(f"lock_stat.{name}.wait_us", delta[name][1], "us", False),
                Metric(f"lock_stat.{name}.contentions", delta[name][0], "contentions", False)]
    return out
