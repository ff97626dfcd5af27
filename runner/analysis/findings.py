"""The report's answers to the lab's three questions (science.md), one figure per finding, shaped as the lab
shows them:

1. does the workload scale in each environment? throughput normalised to the smallest load (1 vCPU) against
   the load, one line per environment;
2. does the guest kernel (its spinlock) decide it? the same, one line per guest kernel;
3. does over-commit share the cores fairly? over-commit efficiency (sum over k VMs against 1 VM) and Jain's
   index per guest kernel, bars per k.

Every line's legend says its accelerator (kvm, xen, tcg) and `nested` when its guests ran on a host that is
itself a virtual machine (its facts: the CPU's hypervisor flag and a hypervisor other than none); the load axis
marks the CPU count of the host or the guest. Where the campaign cannot answer a question, one line says what
the matrix needs. Pure over DataFrames except the figures, which `rep.figure` draws (runner.analysis.report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis import plots
from runner.analysis.axes import label, shown
from runner.analysis.overcommit import VMS_AXIS, overcommit_table
from runner.analysis.stats import param_columns, spread_by_level
from runner.provision import environments


def _environment(name: Any) -> environments.Environment | None:
    """The environment of that name; None for one this runner does not know (an older or foreign dataset)."""
    return environments.get(str(name)) if str(name) in environments.known() else None


def is_vm_env(name: Any) -> bool:
    """Trials of that environment ran in virtual machines (which have an accelerator)."""
    return (env := _environment(name)) is not None and env.virtual_machines

MAX_LINES = 12
# hypervisor facts (systemd-detect-virt) that name a container manager, not a virtual machine
CONTAINERS = frozenset({"docker", "podman", "lxc", "lxc-libvirt", "systemd-nspawn", "openvz", "rkt", "wsl", "proot",
                        "pouch", "container-other"})


def host_cpus(facts: Mapping[str, Any] | None) -> float | None:
    """Logical CPUs of a host from its facts: the collector's cpu.threads (or cpu.cores), or a flat summary's
    cpus, threads or cores."""
    if not facts:
        return None
    cpu = facts.get("cpu") if isinstance(facts.get("cpu"), Mapping) else {}
    for v in (cpu.get("threads"), cpu.get("cores"), facts.get("cpus"), facts.get("cores")):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def is_virtual(facts: Mapping[str, Any] | None) -> bool:
    """Whether a host is itself a virtual machine (so a guest on it is nested)."""
    if not facts:
        return False
    cpu = facts.get("cpu") if isinstance(facts.get("cpu"), Mapping) else {}
    hv = facts.get("hypervisor")
    return bool(cpu.get("hypervisor_flag")) and isinstance(hv, str) and hv not in ("none", "") and hv not in CONTAINERS \
        or isinstance(hv, str) and hv in ("kvm", "qemu", "vmware", "microsoft", "oracle", "bochs", "amazon", "parallels")


def nested_hosts(facts: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The hosts whose guests are nested (is_virtual)."""
    return {str(h) for h, f in facts.items() if is_virtual(f)}


def _value(v: Any) -> float | None:
    try:
        out = float(v)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) and out > 0 else None


def cpu_count(params: Mapping[str, Any], rows: pd.DataFrame, axis: str, trials: pd.DataFrame | None,
              facts: Mapping[str, Mapping[str, Any]]) -> tuple[float, str] | None:
    """The CPU count the load of a slice ran on, and what it counts: the guest's vCPUs (a container's CPUs) when
    the load runs inside guests, else the host's CPUs (also when the load axis is the vCPUs themselves: past the
    host's CPUs they are over-committed). None when the data does not say."""
    env = _environment(params.get("env", "host"))
    if shown(axis) != "vcpus" and env is not None and env.starts_guests:
        v = _value(params.get("vcpus"))
        if v is None and trials is not None and "guest_vcpus" in trials.columns and "trial_id" in rows.columns:
            sizes = trials.loc[trials["trial_id"].isin(rows["trial_id"]).to_numpy(), "guest_vcpus"].dropna()
            v = _value(sizes.iloc[0]) if len(sizes) else None
        if v is not None:
            return v, env.cpu_noun
    hosts = sorted(map(str, rows["host"].dropna().unique())) if "host" in rows.columns else []
    counts = [c for h in hosts if (c := host_cpus(facts.get(h))) is not None]
    return (min(counts), "host CPUs") if counts else None


def line_label(params: Mapping[str, Any], keys: Sequence[str], nested: set[str], hosts: Sequence[str]) -> str:
    """'env=kvm accel=kvm nested lock=ticket': the keys that vary, the accelerator of a guest always, `nested`
    where its host is a virtual machine."""
    first = {k: params[k] for k in keys if k in params}
    vm = is_vm_env(params.get("env", "host"))
    if vm and "accel" in params:
        first.setdefault("accel", params["accel"])
    text = label(first)
    if vm and set(hosts) & nested:
        text += " nested"
    return text or "all"


def _varying(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    return [c for c in cols if c in frame.columns and frame[c].nunique(dropna=False) > 1]


def _follows(frame: pd.DataFrame, col: str, axis: str) -> bool:
    """`col` takes one value at each value of the load axis: it only restates the load (stress-ng's `workers:
    "100%"` resolves to the vCPUs of each cell), so it must not split a line into single points."""
    rows = frame[frame[axis].notna().to_numpy()]
    return len(rows) > 0 and int(rows.groupby(axis, dropna=False, observed=True)[col].nunique(dropna=False).max()) <= 1


def _lines(tot: pd.DataFrame, axis: str, lead: str, nested: set[str]) -> list[plots.Line]:
    """One normalised line per combination of the parameters that vary (less those that only restate the load
    axis), `lead` first in its label."""
    params = [c for c in param_columns(tot) if c != axis]  # campaigns never pooled: one that varies is in the key
    keys = [k for k in _varying(tot, params) if k == lead or not _follows(tot, k, axis)]
    keys = [lead, *[k for k in keys if k != lead]] if lead in keys else keys
    out = []
    groups = tot.groupby(keys, sort=True, dropna=False, observed=True) if keys else [((), tot)]
    for key, rows in groups:
        key = key if isinstance(key, tuple) else (key,)
        rows = rows[rows[axis].notna().to_numpy()]  # a cell the load axis does not apply to has no line
        if rows[axis].nunique() < 2:
            continue
        lv = spread_by_level(rows[axis].to_numpy(dtype=float), rows["value"].to_numpy(dtype=float))
        if len(lv) < 2 or not lv["median"].iloc[0]:  # one load, or nothing to normalise by
            continue
        base = float(lv["median"].iloc[0])
        first = rows.iloc[0]
        p = {**{c: first[c] for c in ("env", "accel") if c in rows.columns}, **dict(zip(keys, key))}
        hosts = sorted(map(str, rows["host"].dropna().unique())) if "host" in rows.columns else []
        out.append(plots.Line(line_label(p, keys, nested, hosts), lv["n"].to_numpy(), lv["median"].to_numpy() / base,
                              lv["q1"].to_numpy() / base, lv["q3"].to_numpy() / base))
    return out


def _cpu_marks(tot: pd.DataFrame, axis: str, trials: pd.DataFrame | None,
               facts: Mapping[str, Mapping[str, Any]]) -> list[tuple[float, str]]:
    marks = set()
    group = [c for c in ("env", "vcpus") if c in tot.columns and c != axis]
    for key, rows in (tot.groupby(group, sort=True, dropna=False, observed=True) if group else [((), tot)]):
        key = key if isinstance(key, tuple) else (key,)
        mark = cpu_count(dict(zip(group, key)), rows, axis, trials, facts)
        if mark is not None:
            marks.add(mark)
    return sorted(marks)


def _more(count: int, hint: Any) -> str:
    """A line saying how many variants a finding's figure leaves out (MAX_LINES), or nothing."""
    if count <= MAX_LINES:
        return ""
    return hint(f"The figure shows the first {MAX_LINES} of {count} variants; the scaling and over-commit sections below "
                "have them all.")


def findings_section(rep: Any, tot: pd.DataFrame, metrics: pd.DataFrame, axis: str | None, metric: str | None,
                     trials: pd.DataFrame | None, facts: Mapping[str, Mapping[str, Any]], hint: Any) -> str:
    """The three findings as HTML (figures through rep.figure); `tot` the total rows, `metric` the throughput-like
    metric they are drawn for; `hint(text)` makes the one-line HTML hint of a finding the data cannot show."""
    parts = ["<h2>The three questions</h2><p>One figure per finding of the lab's study (docs/analysis.md): scaling per "
             "environment, per guest kernel, and over-commit. Throughput is normalised to its value at the smallest "
             "load of each line; the dotted vertical lines mark the CPU count (host CPUs, or the guest's vCPUs).</p>"]
    nested = nested_hosts(facts)
    if metric is None:
        parts.append(hint("No metric that scales like a throughput: the findings need one (lockbench's throughput, "
                          "stressng's bogo-ops/s, gmake's builds_per_hour)."))
        return "\n".join(parts)
    rows = tot[(tot["metric"] == metric).to_numpy()]
    if VMS_AXIS in rows.columns and rows[VMS_AXIS].notna().any():
        fewest = rows[VMS_AXIS].isna() | (rows[VMS_AXIS] == rows[VMS_AXIS].min())  # scaling: one VM at a time
        rows = rows[fewest.to_numpy()]
    unit = str(rows["unit"].dropna().iloc[0]) if "unit" in rows.columns and rows["unit"].notna().any() else ""
    what = f"{metric} / {metric} at the smallest {shown(axis)}" if axis else metric
    # 1. environments
    parts.append("<h3>1. Scaling per environment</h3>")
    envs = rows["env"].nunique() if "env" in rows.columns else 1
    if axis is None or rows[axis].nunique() < 2:
        parts.append(hint("No load axis with 2+ values: add <code>vcpus: [1, 2, 4]</code> (or <code>threads</code>) to the axes."))
    else:
        lines = _lines(rows, axis, "env", nested)
        marks = _cpu_marks(rows, axis, trials, facts)
        parts.append(rep.figure("finding_env", plots.normalised, lines=lines[:MAX_LINES], axis=shown(axis), ylabel=what,
                                title=f"{metric} ({unit}) normalised, one line per environment" if unit else
                                f"{metric} normalised, one line per environment", cpus=marks))
        parts.append(_more(len(lines), hint))
        if envs < 2:
            parts.append(hint("One environment only: add <code>env: [host, container, kvm]</code> to the axes to compare "
                              "the bare host, containers and guests."))
    # 2. guest kernels
    parts.append("<h3>2. Scaling per guest kernel</h3>")
    kernels = rows["guest_kernel"].nunique() if "guest_kernel" in rows.columns else 0
    guests = rows[rows["env"].map(is_vm_env).to_numpy(dtype=bool)] if "env" in rows.columns else rows.iloc[:0]
    if axis is not None and kernels > 1 and guests[axis].nunique() >= 2:
        lines = _lines(guests, axis, "guest_kernel", nested)
        parts.append(rep.figure("finding_kernel", plots.normalised, lines=lines[:MAX_LINES], axis=shown(axis), ylabel=what,
                                title=f"{metric} normalised, one line per guest kernel",
                                cpus=_cpu_marks(guests, axis, trials, facts)))
        parts.append(_more(len(lines), hint))
    else:
        parts.append(hint("Needs guests with 2+ guest kernels along a load axis: add <code>guest_kernel: [pv, nopv]</code> "
                          "to the axes of a kvm or xen campaign."))
    # 3. over-commit
    parts.append("<h3>3. Over-commit</h3>")
    cells = pd.DataFrame()
    if VMS_AXIS in metrics.columns and metrics[VMS_AXIS].nunique() > 1:
        cells, _ = overcommit_table(metrics, metric=metric)
    if cells.empty or cells["k"].max() < 2:
        parts.append(hint("Needs 2+ guests sharing the cores, per-VM results and a single-VM reference: add "
                          "<code>vms: [1, 2]</code> to the axes."))
        return "\n".join(parts)
    keys = _varying(cells, [c for c in param_columns(metrics) if c != VMS_AXIS])
    keys = ["guest_kernel", *[k for k in keys if k != "guest_kernel"]] if "guest_kernel" in keys else keys
    bars = []
    for key, vdf in (cells.groupby(keys, sort=True, dropna=False, observed=True) if keys else [((), cells)]):
        key = key if isinstance(key, tuple) else (key,)
        if vdf["k"].max() < 2:  # a variant measured with one VM only: no over-commit to show
            continue
        first = vdf.iloc[0]
        p = {**{c: first[c] for c in ("env", "accel") if c in vdf.columns}, **dict(zip(keys, key))}
        hosts = sorted(map(str, metrics.loc[metrics["cell_id"].isin(vdf["cell_id"]).to_numpy(), "host"].dropna().unique())) \
            if "host" in metrics.columns else []
        vdf = vdf.sort_values("k")
        bars.append(plots.Bars(line_label(p, keys, nested, hosts), vdf["k"].to_numpy(), vdf["efficiency"].to_numpy(),
                               vdf["jain"].to_numpy()))
    parts.append(rep.figure("finding_overcommit", plots.overcommit_bars, bars=bars[:MAX_LINES],
                            title=f"over-commit of {metric}: efficiency and Jain's index per k"))
    parts.append(_more(len(bars), hint))
    if "guest_kernel" not in keys:
        parts.append(hint("One guest kernel only: add <code>guest_kernel: [pv, nopv]</code> to the axes to see over-commit "
                          "per guest kernel."))
    return "\n".join(parts)
