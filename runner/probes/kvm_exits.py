"""kvm_exits: KVM's exit counters by reason over the trial, on the hypervisor host (debugfs, as VBENCH read
them): exits, halt exits, pause-loop exits seen as directed yields, I/O, MMIO, interrupt windows...

The counters in /sys/kernel/debug/kvm/ are the sums over every VM on the host (other users' guests too:
the host should be reserved for the campaign). Needs debugfs mounted and readable (root) and the kvm
module loaded. On a bare-host trial the figures are those of whatever guests run there (usually none).
"""

from __future__ import annotations

from typing import Any

from runner.hosts.base import Host
from runner.probes.base import Probe, ProbeContext, read_text, register
from runner.records.metric import Metric

DEBUGFS = "/sys/kernel/debug/kvm"
# The counters worth recording: every '*exits' and these (pause-loop exits show as directed yields).
EXTRA = ("halt_wakeup", "halt_successful_poll", "halt_attempted_poll", "directed_yield_attempted",
         "directed_yield_successful", "preemption_reported", "preemption_other", "pf_fixed", "insn_emulation")

_READ = 'cd "$1" && for f in *; do [ -f "$f" ] && read -r v < "$f" && echo "$f $v"; done; true'


@register("kvm_exits")
class KvmExits(Probe):
    description = "KVM exit counters by reason (debugfs kvm) on the hypervisor host"
    sides = ("host",)
    timeout = 15.0

    def check(self, host: Host, ctx: ProbeContext) -> str | None:
        if not host.run(["test", "-r", f"{DEBUGFS}/exits"], timeout=self.timeout).ok:
            return f"no {DEBUGFS}/exits (kvm module not loaded, debugfs not mounted, or not root)"
        return None

    def start(self, host: Host, ctx: ProbeContext) -> Any:
        return parse_counters(read_text(host, ["sh", "-c", _READ, "kvm_exits", DEBUGFS], self.timeout, "kvm counters"))

    def stop(self, host: Host, ctx: ProbeContext, state: Any) -> list[Metric]:
        after = parse_counters(read_text(host, ["sh", "-c", _READ, "kvm_exits", DEBUGFS], self.timeout, "kvm counters"))
        return deltas(state, after)


def parse_counters(text: str) -> dict[str, int]:
    """'name value' lines -> counters worth recording (pure)."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 2 and f[1].isdigit() and (f[0].endswith("exits") or f[0] in EXTRA):
            out[f[0]] = int(f[1])
    return out


def deltas(before: dict[str, int], after: dict[str, int]) -> list[Metric]:
    return [Metric(f"kvm_exits.{k}", float(after[k] - before.get(k, 0)), "events", None) for k in sorted(after) if after[k] >= before.get(k, 0)]
