"""Host fingerprints: the facts that make results comparable (CPU, NUMA, SMT, governor, turbo, kernel ...).

One collector exists, `playbooks/roles/host_facts/files/collect_facts.py`: the Ansible role `host_facts`
ships it to hosts, `collect_local()` runs the same file here and `collect_on(host)` runs it on any Host
(local or over SSH) through a temporary directory there. Everything else in this module is a pure
function over its JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ProvisionError
from runner.hosts.base import Host

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = PROJECT_ROOT / "playbooks" / "roles" / "host_facts" / "files" / "collect_facts.py"
FACTS_VERSION = 1  # the collector's FORMAT_VERSION this module understands


@dataclass(frozen=True)
class Change:
    """One fingerprint difference; `path` is a flattened key path like 'cpufreq.policies.policy0.governor'."""

    path: str
    old: Any
    new: Any


def collect_local(timeout: float = 60.0) -> dict[str, Any]:
    """Run the collector on this machine and return its facts."""
    try:
        proc = subprocess.run(
            [sys.executable, str(COLLECTOR)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ProvisionError(f"fact collector {COLLECTOR} timed out after {timeout:g} s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProvisionError(f"fact collector {COLLECTOR} failed (rc {proc.returncode}): {last}")
    return json.loads(proc.stdout)


def collect_on(host: Host, timeout: float = 60.0) -> dict[str, Any]:
    """Run the collector with python3 on `host` from a fresh temporary directory there; return its facts.

    Raises HostError when the host cannot be reached, ProvisionError when the collector cannot run or fails."""
    made = host.run(["mktemp", "-d", "/tmp/runner-facts.XXXXXXXX"], timeout=30)
    if not made.ok or not made.stdout.strip():
        raise ProvisionError(f"{host.name}: cannot create a temporary directory for the fact collector: {_last(made.stderr)}")
    tmpdir = made.stdout.strip()
    try:
        script = f"{tmpdir}/collect_facts.py"
        host.put(COLLECTOR, script)
        proc = host.run(["python3", script], timeout=timeout)
    finally:
        host.run(["rm", "-rf", tmpdir], timeout=30)
    if proc.timed_out:
        raise ProvisionError(f"{host.name}: fact collector timed out after {timeout:g} s")
    if proc.rc == 127:
        raise ProvisionError(f"{host.name}: the fact collector needs python3 on the host: {_last(proc.stderr)}")
    if proc.rc != 0:
        raise ProvisionError(f"{host.name}: fact collector failed (rc {proc.rc}): {_last(proc.stderr)}")
    try:
        facts = json.loads(proc.stdout)
    except ValueError:
        raise ProvisionError(f"{host.name}: fact collector printed no JSON: {_last(proc.stdout)}") from None
    if not isinstance(facts, dict):
        raise ProvisionError(f"{host.name}: fact collector printed {type(facts).__name__}, not an object")
    return facts


def _last(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1][:300]


def load_facts(path: Path) -> dict[str, Any]:
    """Read a stored facts file; refuse one written by an unknown collector version."""
    try:
        facts = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"{path}: cannot read host facts: {exc}") from exc
    if facts.get("version") != FACTS_VERSION:
        raise ProvisionError(f"{path}: facts version {facts.get('version')!r} is not {FACTS_VERSION}")
    return facts


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def flatten(facts: Mapping[str, Any]) -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay whole values."""
    out: dict[str, Any] = {}
    _flatten(facts, "", out)
    return out


def diff_fingerprints(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """Every flattened key whose value differs, sorted by path; a missing key shows as None."""
    a, b = flatten(before), flatten(after)
    return [Change(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _one(values: set[Any]) -> Any:
    """The single value, None when there is none, 'mixed' when they differ."""
    if not values:
        return None
    return values.pop() if len(values) == 1 else "mixed"


def summarize(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The short form stored with every dataset row's host metadata."""
    cpu = facts.get("cpu") or {}
    policies = (facts.get("cpufreq") or {}).get("policies") or {}
    thp = facts.get("thp") or {}
    return {
        "cpu_model": cpu.get("model"),
        "sockets": cpu.get("sockets"),
        "cores": cpu.get("cores"),
        "threads": cpu.get("threads"),
        "numa_nodes": len((facts.get("numa") or {}).get("nodes") or []),
        "kernel": (facts.get("kernel") or {}).get("release"),
        "cmdline": (facts.get("kernel") or {}).get("cmdline"),
        "smt": (facts.get("smt") or {}).get("control"),
        "governor": _one({p.get("governor") for p in policies.values()}),
        "turbo": (facts.get("turbo") or {}).get("enabled"),
        "thp": thp.get("enabled"),
        "microcode": cpu.get("microcode"),
        "hypervisor": facts.get("hypervisor"),
    }
