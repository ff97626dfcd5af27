"""The only module that calls ansible-runner: run the project's playbooks and provision hosts.

`run_playbook()` runs one playbook in a fresh private data dir under `private_data_root`, with the
project's ansible.cfg, host key checking on, the venv's bin on PATH and no signal handlers of its own.
Events are summarized in memory (never written as job_events), and only the last `KEEP_RUNS` run
directories are kept. `provision()` is the sequence the CLI runs: facts -> (tune -> facts) -> prepare.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ansible_runner

from runner.errors import ProvisionError
from runner.provision.fingerprint import Change, diff_fingerprints, load_facts, summarize
from runner.provision.tuning import knobs_from_vars
from runner.util import one_line

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_CFG = PROJECT_ROOT / "ansible.cfg"
PLAYBOOKS = PROJECT_ROOT / "playbooks"
KEEP_RUNS = 5
_HOST_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass(frozen=True)
class TaskEvent:
    """Progress: `status` is started (host None), ok, changed, failed, unreachable or skipped."""

    playbook: str
    task: str
    host: str | None
    status: str
    message: str = ""


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class PlaybookResult:
    playbook: str
    rc: int
    status: str  # successful, failed, timeout, canceled
    stats: Mapping[str, HostStats]
    failures: tuple[str, ...]  # one line each: "host: task: message"
    artifact_dir: Path
    data: Mapping[str, Any] = field(default_factory=dict)  # what the plays recorded with set_stats

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.stats.values())

    @property
    def failed_hosts(self) -> tuple[str, ...]:
        return tuple(sorted(h for h, s in self.stats.items() if s.failed or s.unreachable))


def _failure_message(res: Mapping[str, Any]) -> str:
    for key in ("msg", "stderr", "module_stderr", "stdout"):
        if res.get(key):
            return one_line(res[key])
    return "failed"


def _rotate(root: Path, keep: int) -> None:
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-keep] if keep else runs:
        shutil.rmtree(old, ignore_errors=True)


def _playbook_path(playbook: str | Path) -> Path:
    path = Path(playbook)
    if not path.is_absolute():
        path = PLAYBOOKS / path
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in PLAYBOOKS.glob("*.yml")))
        raise ProvisionError(f"no playbook {playbook}; known: {known}")
    return path


def run_playbook(
    playbook: str | Path,
    *,
    inventory: str | Path,
    limit: str | None = None,
    extravars: Mapping[str, Any] | None = None,
    check: bool = False,
    private_data_root: Path,
    timeout: float | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    known_hosts: Path | None = None,
) -> PlaybookResult:
    """Run `playbook` (a path, or a name under playbooks/). Raise ProvisionError when it fails.
    `known_hosts`: check host keys against this file, whatever the inventory says (see ssh_args_with)."""
    path = _playbook_path(playbook)
    root = Path(private_data_root)
    root.mkdir(parents=True, exist_ok=True)
    _rotate(root, KEEP_RUNS - 1)
    run_dir = root / f"{time.strftime('%Y%m%dT%H%M%S')}-{path.stem}-{os.getpid()}-{time.monotonic_ns()}"
    run_dir.mkdir()

    counts: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    data: dict[str, Any] = {}

    def handle(event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        ev = event.get("event_data") or {}
        task = str(ev.get("task") or "")
        if kind == "playbook_on_task_start" and on_event:
            on_event(TaskEvent(path.name, task, None, "started"))
        elif kind in _HOST_EVENTS:
            host = str(ev.get("host"))
            res = ev.get("res") or {}
            status = _HOST_EVENTS[kind]
            if status == "ok" and res.get("changed"):
                status = "changed"
            message = ""
            if status in ("failed", "unreachable") and not ev.get("ignore_errors"):
                message = _failure_message(res)
                failures.append(f"{host}: {task}: {message}")
            if on_event:
                on_event(TaskEvent(path.name, task, host, status, message))
        elif kind == "playbook_on_stats":
            for key in ("ok", "changed", "failures", "dark", "skipped"):
                for host, n in (ev.get(key) or {}).items():
                    counts.setdefault(host, {})[key] = n
            data.update(ev.get("artifact_data") or {})
        return False  # keep nothing on disk: the summary above is all we need

    env_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    result = ansible_runner.run(
        private_data_dir=str(run_dir),
        playbook=str(path),
        inventory=str(Path(inventory).resolve()),
        limit=limit,
        extravars=dict(extravars or {}),
        cmdline="--check --diff" if check else None,
        envvars={
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "PATH": env_path,
            **({"ANSIBLE_SSH_ARGS": ssh_args_with(_cfg_ssh_args(), known_hosts)} if known_hosts is not None else {}),
        },
        timeout=int(timeout) if timeout else None,
        event_handler=handle,
        cancel_callback=lambda: False,
        quiet=True,
        suppress_env_files=True,
    )
    stats = {
        host: HostStats(c.get("ok", 0), c.get("changed", 0), c.get("failures", 0), c.get("dark", 0), c.get("skipped", 0))
        for host, c in sorted(counts.items())
    }
    out = PlaybookResult(path.name, int(result.rc), str(result.status), stats, tuple(failures),
                         Path(result.config.artifact_dir), data)
    if out.rc != 0:
        if out.status == "timeout":
            raise ProvisionError(f"playbook {path.name} timed out after {timeout:g} s (artifacts: {out.artifact_dir})")
        detail = "; ".join(failures[:3]) or f"see {out.artifact_dir}/stdout"
        hosts = ", ".join(out.failed_hosts) or "no host reached"
        raise ProvisionError(f"playbook {path.name} failed (rc {out.rc}) on {hosts}: {detail}")
    return out


def _cfg_ssh_args() -> str:
    """The [ssh_connection] ssh_args of the project's ansible.cfg."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ANSIBLE_CFG)
    return parser.get("ssh_connection", "ssh_args", fallback="")


def ssh_args_with(ssh_args: str, known_hosts: Path) -> str:
    """ansible.cfg's ssh_args plus `-o UserKnownHostsFile=FILE` (pure). Ansible puts ssh_args before the
    inventory's ansible_ssh_common_args/extra_args, and ssh takes the first value of an option, so this file
    wins over the inventory's, as it does for the runner's own connections."""
    path = str(Path(known_hosts).expanduser())
    value = f'"{path}"' if any(c.isspace() for c in path) else path  # ssh splits an unquoted value at blanks
    option = shlex.quote(f"UserKnownHostsFile={value}")
    return f"{ssh_args} -o {option}".strip()


@dataclass(frozen=True)
class ProvisionReport:
    hosts: tuple[str, ...]
    facts_files: Mapping[str, Path]
    summaries: Mapping[str, Mapping[str, Any]]
    tuning_changes: Mapping[str, tuple[Change, ...]]  # fingerprint differences the tuning made, per host
    tuning: Mapping[str, Any]  # per host: changes, unsupported, blocked, reboot_required (from host_tuning)
    results: tuple[PlaybookResult, ...]
    check: bool


def provision(
    hosts_pattern: str,
    inventory: str | Path,
    dest_dir: Path,
    *,
    tune: Mapping[str, Any] | None = None,
    check: bool = False,
    prepare_vars: Mapping[str, Any] | None = None,
    private_data_root: Path | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    known_hosts: Path | None = None,
) -> ProvisionReport:
    """Fingerprint hosts, optionally tune them (knobs as in runner.provision.tuning), prepare workloads.

    Facts land in `dest_dir/hosts/<host>.json` (after tuning, when tuning ran). With `check` nothing is changed
    on the hosts and nothing is written under `dest_dir` or `private_data_root`: the facts and Ansible's run
    directories go to a temporary directory, removed on return (facts_files is then empty).
    """
    common = {"hosts_pattern": hosts_pattern, "inventory": inventory, "tune": tune, "check": check,
              "prepare_vars": prepare_vars, "on_event": on_event, "known_hosts": known_hosts}
    if check:
        with tempfile.TemporaryDirectory(prefix="runner-provision-check-") as scratch:
            return replace(_provision(Path(scratch) / "hosts", Path(scratch) / "ansible", **common), facts_files={})
    dest_dir = Path(dest_dir)
    root = Path(private_data_root) if private_data_root else dest_dir / "ansible"
    return _provision(dest_dir / "hosts", root, **common)


def _provision(
    facts_dir: Path,
    root: Path,
    *,
    hosts_pattern: str,
    inventory: str | Path,
    tune: Mapping[str, Any] | None,
    check: bool,
    prepare_vars: Mapping[str, Any] | None,
    on_event: Callable[[TaskEvent], None] | None,
    known_hosts: Path | None,
) -> ProvisionReport:
    """provision(), with the facts in `facts_dir` and Ansible's run directories under `root`."""
    common = {"inventory": inventory, "limit": hosts_pattern, "private_data_root": root, "on_event": on_event, "known_hosts": known_hosts}
    facts_vars = {"host_facts_dest": str(facts_dir.resolve())}
    results = [run_playbook("facts.yml", extravars=facts_vars, **common)]
    hosts = tuple(sorted(results[0].stats))
    before = {h: load_facts(facts_dir / f"{h}.json") for h in hosts}
    tuning: dict[str, Any] = {}
    if tune:
        knobs = knobs_from_vars(tune, "tune")  # fail before touching any host
        tune_vars = {f"host_tuning_{k}": v for k, v in vars(knobs).items()}
        tune_vars["host_tuning_cmdline_add"] = list(knobs.cmdline_add)
        tune_vars["host_tuning_kvm_params"] = {m: dict(p) for m, p in knobs.kvm_params.items()}
        results.append(run_playbook("tune.yml", extravars=tune_vars, check=check, **common))
        tuning = dict(results[-1].data.get("host_tuning") or {})
        results.append(run_playbook("facts.yml", extravars=facts_vars, **common))
    results.append(run_playbook("prepare.yml", extravars=dict(prepare_vars or {}), check=check, **common))
    after = {h: load_facts(facts_dir / f"{h}.json") for h in hosts}
    return ProvisionReport(
        hosts=hosts,
        facts_files={h: facts_dir / f"{h}.json" for h in hosts},
        summaries={h: summarize(after[h]) for h in hosts},
        tuning_changes={h: tuple(diff_fingerprints(before[h], after[h])) for h in hosts},
        tuning=tuning,
        results=tuple(results),
        check=check,
    )
