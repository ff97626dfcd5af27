"""gmake: build the Linux kernel on N cores, the lab's main workload (VBENCH/MOSBENCH method; docs/gmake.md).

The work on the host is done by `hostside.py` beside this file (standard library only), copied to the host's
campaign work directory by `prepare()`. A trial runs `python3 hostside.py run ...` with every parameter as
its own argv element. The first trial of each (source, config) on a host unpacks and configures the tree
(prepare() is not given the parameters, so it cannot); the timed build is never part of that.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from runner.errors import ProvisionError, TrialError, UsageError
from runner.hosts.base import CommandResult, Host
from runner.fairness import jain
from runner.records.metric import Metric, vm_values
from runner.workloads.base import Workload, WorkloadContext, register
from runner.workloads.gmake.hostside import missing_tools

DEFAULTS = {"source": "linux-source", "config": "x86_64_defconfig", "target": "vmlinux", "tmpdir": "/dev/shm"}
# Measured CPU-seconds of one `make vmlinux` from the prepared state (Debian linux-source 6.1, this 2-core VM).
CORE_SECONDS = {"tinyconfig": 160.0, "x86_64_defconfig": 2200.0, "defconfig": 2200.0}
# A configured linux-source-6.1 tree (no .git: about 1.3 GiB) and its x86_64_defconfig vmlinux objects (about
# 0.7 GiB), all in the per-trial tmpfs copy: what the copy's tmpfs must hold.
TMPFS_NEED_MIB = 2048
OVERHEAD_S = 15.0  # copy to tmpfs, pre-read, remove
_CONFIG = re.compile(r"^[A-Za-z0-9_.-]*config$")
_TARGET = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")
_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def script_path() -> Path:
    return Path(str(resources.files("runner.workloads.gmake").joinpath("hostside.py")))


def script_name() -> str:
    digest = hashlib.sha256(script_path().read_bytes()).hexdigest()[:12]
    return f"gmake-{digest}.py"


def settings(params: Mapping[str, Any], cpus: int) -> dict[str, Any]:
    """The parameters with defaults filled in: cores defaults to all `cpus`, jobs to 2 x cores."""
    out = {**DEFAULTS, **{k: params[k] for k in ("source", "config", "target", "tmpdir") if k in params}}
    out["cores"] = int(params.get("cores", cpus))
    out["jobs"] = int(params.get("jobs", 2 * out["cores"]))
    return out


def trial_argv(params: Mapping[str, Any], ctx: WorkloadContext) -> list[str]:
    """The argv of one trial: every value its own element, never pasted into a shell line."""
    s = settings(params, ctx.cpus)
    if s["cores"] > ctx.cpus:
        raise TrialError(f"{ctx.host}: gmake cores {s['cores']} > the host's {ctx.cpus} CPUs")
    name = _NAME.sub("_", f"{ctx.extra.get('campaign', 'runner')}-gmake-{ctx.extra.get('trial_id', 'trial')}")
    return [
        "python3", f"{ctx.workdir}/{script_name()}", "run",
        "--source", str(s["source"]), "--config", str(s["config"]), "--cores", str(s["cores"]),
        "--jobs", str(s["jobs"]), "--target", str(s["target"]), "--cache", f"{ctx.workdir}/gmake",
        "--tmpdir", str(s["tmpdir"]), "--name", name,
    ]  # fmt: skip


def parse_output(stdout: str) -> dict[str, Any]:
    """The JSON line printed by hostside.py run; TrialError when it is missing or incomplete."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    else:
        first = stdout.strip()[:60] or "(empty)"
        raise TrialError(f"gmake output: no JSON line found (starts with {first!r})")
    for key in ("build_time", "cores", "jobs"):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise TrialError(f"gmake output: {key} is {value!r}, not a positive number")
    return doc


def to_metrics(doc: Mapping[str, Any]) -> list[Metric]:
    """build_time and builds/hour: total (VBENCH plots this) and per core (MOSBENCH plots this)."""
    per_hour = 3600.0 / doc["build_time"]
    return [
        Metric("build_time", float(doc["build_time"]), "s", False),
        Metric("builds_per_hour", per_hour, "builds/h", True),
        Metric("builds_per_hour_per_core", per_hour / doc["cores"], "builds/h/core", True),
        Metric("cores", float(doc["cores"]), "cores", None),
        Metric("jobs", float(doc["jobs"]), "jobs", None),
    ]


def local_missing(which: Any = shutil.which) -> str | None:
    """What this machine lacks to build a kernel, or None."""
    absent = missing_tools(which)
    if not absent:
        return None
    return f"needs {', '.join(absent)} on PATH (Debian: apt-get install make gcc flex bison bc perl xz-utils util-linux)"


@register("gmake")
class Gmake(Workload):
    description = "Linux kernel build (VBENCH gmake): make -j(2 x cores) vmlinux on tmpfs, in builds/hour"
    # builds_per_hour is the throughput; builds_per_hour_per_core is already throughput / cores (an efficiency),
    # build_time a duration, cores and jobs counts.
    scaling_metrics = frozenset({"builds_per_hour"})
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "source": {"type": "string", "minLength": 1, "description": "linux-source (Debian's /usr/src/linux-source-*.tar.xz), or an absolute path on the host to a tarball or kernel tree"},
            "config": {"type": "string", "minLength": 1, "description": "make config target (default x86_64_defconfig; tinyconfig for quick runs) or an absolute path to a .config on the host"},
            "cores": {"x-cpus": True, "type": "integer", "minimum": 1, "description": "CPUs the build may use (taskset on the first N allowed CPUs); default all (may be relative, e.g. \"100%\": of the trial's CPUs: vcpus if given (a guest's vCPUs, a container's cpuset), else the host's CPUs)"},
            "jobs": {"type": "integer", "minimum": 1, "description": "make -j (default 2 x cores)"},
            "target": {"type": "string", "minLength": 1, "description": "make target (default vmlinux), e.g. init/ for a short run"},
            "tmpdir": {"type": "string", "minLength": 1, "description": "tmpfs directory on the host for the per-trial copy (default /dev/shm)"},
        },
    }

    def missing(self) -> str | None:
        return local_missing()

    def validate(self, params: Mapping[str, Any]) -> None:
        source = params.get("source", DEFAULTS["source"])
        if source != "linux-source" and not str(source).startswith("/"):
            raise UsageError(f"workload.params.source: {source!r} is not 'linux-source' or an absolute path")
        config = str(params.get("config", DEFAULTS["config"]))
        if not (config.startswith("/") or _CONFIG.fullmatch(config)):
            raise UsageError(f"workload.params.config: {config!r} is not a make *config target (e.g. tinyconfig) or an absolute path")
        target = str(params.get("target", DEFAULTS["target"]))
        if not _TARGET.fullmatch(target):
            raise UsageError(f"workload.params.target: {target!r} is not a make target (letters, digits, _ . / + -; no leading -)")
        tmpdir = str(params.get("tmpdir", DEFAULTS["tmpdir"]))
        if not tmpdir.startswith("/"):
            raise UsageError(f"workload.params.tmpdir: {tmpdir!r} is not an absolute path")

    def plan_warnings(self, params: Mapping[str, Any], memory_mib: int | None, shm_mib: int | None) -> list[str]:
        """The tree copied to tmpfs (/dev/shm: a container's is as large as its memory, a guest's half of its RAM)
        with the build's objects needs about TMPFS_NEED_MIB; a smaller one ends the trial with SIGKILL."""
        if memory_mib is None or shm_mib is None or str(params.get("tmpdir", DEFAULTS["tmpdir"])) != DEFAULTS["tmpdir"]:
            return []
        if shm_mib >= TMPFS_NEED_MIB:
            return []
        enough = -(-TMPFS_NEED_MIB * memory_mib // max(shm_mib, 1))
        return [f"gmake in {params.get('env')} with memory {memory_mib} MiB: its {DEFAULTS['tmpdir']} holds {shm_mib} MiB, but the "
                f"kernel tree copied there and its build need about {TMPFS_NEED_MIB} MiB; the trial will likely be killed for "
                f"memory (give memory: {enough} or more)"]

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        """Rough: CPU-seconds of vmlinux for the config over min(cores, jobs), plus the copy (other targets: less)."""
        cores = params.get("cores", 1)
        cores = cores if isinstance(cores, int) else 1
        jobs = params.get("jobs", 2 * cores)
        work = CORE_SECONDS.get(str(params.get("config", DEFAULTS["config"])), CORE_SECONDS["x86_64_defconfig"])
        return work / max(1, min(cores, jobs)) + OVERHEAD_S

    def prepare(self, host: Host, ctx: WorkloadContext) -> None:
        script = f"{ctx.workdir}/{script_name()}"
        if host.run(["test", "-f", script], timeout=30).rc != 0:
            host.put(script_path(), f"{script}.tmp")
            host.run(["mv", "-f", f"{script}.tmp", script], timeout=30)
        checked = host.run(["python3", script, "check"], timeout=60)
        if checked.rc == 127:
            raise ProvisionError(f"{host.name}: gmake needs python3 on the host")
        if not checked.ok:
            why = (checked.stderr.strip().splitlines() or ["no output"])[-1]
            raise ProvisionError(f"{host.name}: gmake cannot build here: {why}")

    def command(self, params: Mapping[str, Any], ctx: WorkloadContext) -> list[str]:
        return trial_argv(params, ctx)

    def parse(self, result: CommandResult, params: Mapping[str, Any]) -> list[Metric]:
        return to_metrics(parse_output(result.stdout))

    def combine_vms(self, per_vm: Sequence[Sequence[Metric]]) -> list[Metric]:
        """A kernel build's rate adds up over the guests like a throughput; per core over all their cores."""
        builds = vm_values(per_vm, "builds_per_hour")
        if builds is None:
            return []
        out = [Metric("builds_per_hour", sum(builds), "builds/h", True), Metric("vm_jain", jain(builds), "index", True)]
        cores = vm_values(per_vm, "cores")
        if cores is not None and sum(cores) > 0:
            out += [Metric("builds_per_hour_per_core", sum(builds) / sum(cores), "builds/h/core", True),
                    Metric("cores", sum(cores), "cores", None)]
        return out
