"""schedstat: run delay (time spent runnable, waiting for a CPU) of every thread of the workload, or of the
vCPU threads of a guest's hypervisor process, from /proc/<pid>/task/<tid>/schedstat.

The workload's processes are those whose working directory is the campaign's work directory (the runner
starts the workload there; the same rule stops it on Ctrl-C), plus, on a guest's hypervisor host, the
processes whose command line names one of the trial's guests (QEMU's vCPU threads; shells and text tools
are not counted, so the sampler never watches itself). A sampler reads them
every SAMPLE_S seconds during the trial, so a thread that ends between two samples loses at most that much
of its figures. Needs a kernel with CONFIG_SCHED_INFO (schedstat files present); works without root for
the user's own processes.
"""

from __future__ import annotations

from typing import Any

from runner.hosts.base import Host
from runner.probes.base import Background, Probe, ProbeContext, parse_samples, register
from runner.records.metric import Metric

SAMPLE_S = 0.25
NS = 1e-9

# The processes to watch: those whose cwd is $1, and those whose command line holds one of $2...
# (busybox find, the only one in the minimal guest image, has no -lname: there `ls -l` of the cwd links,
# two processes per scan whatever the number of processes, which matters in a slow TCG guest)
_FIND = r"""
wd=$1; shift
{ if find /proc/self/cwd -maxdepth 0 -lname / >/dev/null 2>&1; then
    find /proc/[0-9]*/cwd -maxdepth 0 -lname "$wd" 2>/dev/null | sed 's,/cwd$,,'
  else
    ls -l /proc/[0-9]*/cwd 2>/dev/null | awk -v wd="$wd" '$(NF-1) == "->" && $NF == wd { p = $(NF-2); sub("/cwd$", "", p); print p }'
  fi
  for n in "$@"; do grep -l -F -e "$n" /proc/[0-9]*/cmdline 2>/dev/null | sed 's,/cmdline$,,' |
    while read -r p; do case "$(cat "$p/comm" 2>/dev/null)" in sh|dash|bash|grep|sed|sort|find|cat|sleep|cut|busybox|"") ;; *) echo "$p";; esac; done
  done
} | sort -u
"""

# Prints 'S <pid> <tid> <run ns> <wait ns> <slices>' for each thread of the processes in $pids.
_THREADS = r"""for p in $pids; do grep -H . "$p"/task/[0-9]*/schedstat 2>/dev/null; done | sed -n "s,^/proc/\([0-9]*\)/task/\([0-9]*\)/schedstat:,S \1 \2 ,p"
"""

# The sampler: every $2 s, the threads' counters (the processes looked for again every RESCAN samples,
# and at every sample while none is found), until stdin closes; then once more, marked @end.
_SAMPLER = r"""
out=$1; iv=$2; rescan=$3; shift 3
find_pids() { sh -c "$FIND" find "$@"; }
: > "$out"
( trap 'exit 0' TERM; i=0; pids=
  while :; do
    if [ -z "$pids" ] || [ $((i % rescan)) -eq 0 ]; then pids=$(find_pids "$@"); fi
    read -r up _ < /proc/uptime; echo "@ $up"; THREADS
    i=$((i + 1)); sleep "$iv" & wait $!
  done ) >> "$out" 2>/dev/null &
loop=$!
cat > /dev/null
kill -TERM $loop 2>/dev/null; wait $loop
pids=$(find_pids "$@"); { read -r up _ < /proc/uptime; echo "@end $up"; THREADS; } >> "$out" 2>/dev/null
""".replace("THREADS", _THREADS.strip())
RESCAN = 4

@register("schedstat")
class Schedstat(Probe):
    description = "run delay of the workload's threads (or of a guest's vCPU threads), /proc/PID/task/TID/schedstat"
    timeout = 15.0

    def check(self, host: Host, ctx: ProbeContext) -> str | None:
        if not host.run(["test", "-r", "/proc/self/schedstat"], timeout=self.timeout).ok:
            return "no /proc/<pid>/schedstat (kernel without CONFIG_SCHED_INFO)"
        return None

    def start(self, host: Host, ctx: ProbeContext) -> Any:
        args = [ctx.workdir, *ctx.processes]
        base = {}
        if ctx.processes:  # long-lived threads (vCPUs) already run: their counters start before the trial
            script = f'pids=$(sh -c "$FIND" find "$@"); {_THREADS}'
            res = host.run(["env", f"FIND={_FIND}", "sh", "-c", script, "schedstat", *args], timeout=self.timeout)
            base = parse_threads(res.stdout.splitlines())
        path = ctx.file(self.name)
        argv = ["env", f"FIND={_FIND}", "sh", "-c", _SAMPLER, "schedstat", path, f"{SAMPLE_S:g}", str(RESCAN), *args]
        return base, Background.spawn(host, argv, path, self.timeout)

    def stop(self, host: Host, ctx: ProbeContext, state: Any) -> list[Metric]:
        base, sampler = state
        return to_metrics(thread_deltas(base, parse_samples(sampler.stop())))


def parse_threads(lines: list[str]) -> dict[tuple[int, int], tuple[int, int]]:
    """(pid, tid) -> (run ns, run delay ns) from 'S pid tid run wait slices' lines (pure)."""
    out = {}
    for line in lines:
        f = line.split()
        if len(f) >= 5 and f[0] == "S":
            try:
                out[(int(f[1]), int(f[2]))] = (int(f[3]), int(f[4]))
            except ValueError:
                continue
    return out


def thread_deltas(base: dict[tuple[int, int], tuple[int, int]], samples: list[tuple[str, float, list[str]]]) -> dict[tuple[int, int], tuple[int, int]]:
    """Each thread's run and run delay over the trial (pure): its last sample minus its value at the start
    (zero for a thread that started during the trial)."""
    last: dict[tuple[int, int], tuple[int, int]] = {}
    for _, _, lines in samples:
        last.update(parse_threads(lines))
    out = {}
    for key, (run, wait) in last.items():
        r0, w0 = base.get(key, (0, 0))
        if run >= r0 and wait >= w0:  # a smaller count: the tid was reused by a new thread
            out[key] = (run - r0, wait - w0)
        else:
            out[key] = (run, wait)
    return out


def to_metrics(deltas: dict[tuple[int, int], tuple[int, int]]) -> list[Metric]:
    if not deltas:
        return [Metric("schedstat.threads", 0.0, "threads", None)]
    keys = sorted(deltas)
    run = sum(deltas[k][0] for k in keys) * NS
    wait = sum(deltas[k][1] for k in keys) * NS
    out = [
        Metric("schedstat.threads", float(len(keys)), "threads", None),
        Metric("schedstat.run_s", run, "s", None),
        Metric("schedstat.run_delay_s", wait, "s", False),
        Metric("schedstat.run_delay_max_s", max(deltas[k][1] for k in keys) * NS, "s", False),
        Metric("schedstat.delay_ratio", wait / (run + wait) if run + wait > 0 else 0.0, "fraction", False),
    ]
    out += [Metric("schedstat.run_delay_s", deltas[k][1] * NS, "s", False, thread=i) for i, k in enumerate(keys)]
    return out
