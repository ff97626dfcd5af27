"""Campaigns on a schedule: each cron slot runs a new dated campaign instance.

The instance of slot 2026-11-26 02:00 of schedule `nightly` over a matrix whose campaign is `locks` is the
campaign `locks-20261126T0200`: its own dataset, made from a copy of the matrix with that campaign name
(written to RUNNER_HOME/instances/). Running the same slot again resumes that dataset (finished trials
are skipped), so an interrupted run is completed by running its slot again.

Schedules live in RUNNER_HOME/schedules.yml (RUNNER_HOME defaults to ~/.config/runner); the last slot
run of each schedule in RUNNER_HOME/state/<name>.json. Two ways to fire them:
- systemd (PID 1 is systemd and systemctl answers): `add` installs a timer and a service unit per
  schedule; OnCalendar= comes from the cron expression; Persistent=true runs a slot missed while the
  machine was down once at boot.
- elsewhere `runner serve` runs the schedules in the foreground; a schedule whose slots were missed
  while it was not running runs once, for the latest missed slot, not once per missed slot.
Cron expressions are read in the controller's local time zone, like cron and systemd timers do.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter

from runner.errors import UnknownNameError, UsageError
from runner.paths import runner_home
from runner.records.store import write_bytes_atomic, write_json_atomic

# What runs a schedule's instance: runner.cli.launch.launch_matrix(path, datasets=, inventory=, quiet=) -> Summary.
Launcher = Callable[..., Any]

SCHEDULES_VERSION = 1  # 1: name, matrix, cron, datasets, inventory, mode, created
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
SLOT_FORMAT = "%Y%m%dT%H%M"
CAMPAIGN_MAX = 64  # runner/matrix/schema.json: campaign names are at most 64 characters
DOW_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
UNIT_PREFIX = "runner-schedule-"


@dataclass(frozen=True)
class Schedule:
    """One scheduled campaign. `mode` is systemd (timer units fire it) or serve (`runner serve` does)."""

    name: str
    matrix: str  # absolute path of the matrix file
    cron: str
    datasets: str  # absolute path
    inventory: str | None  # absolute path; None: the project's inventory/
    mode: str
    created: str  # ISO time with offset


# ----- pure decisions -------------------------------------------------------------------------------
def check_cron(expr: str) -> None:
    if not croniter.is_valid(expr):
        raise UsageError(f"cron expression {expr!r} is not valid; e.g. '0 2 * * *' (minute hour day month weekday)")


def _ranges(values: Sequence[int], fmt: Callable[[int], str] = str) -> str:
    """[1, 2, 3, 7] -> '1..3,7' (systemd's calendar syntax)."""
    out, run = [], [values[0]]
    for v in values[1:]:
        if v == run[-1] + 1:
            run.append(v)
            continue
        out.append(run)
        run = [v]
    out.append(run)
    return ",".join(fmt(r[0]) if len(r) == 1 else f"{fmt(r[0])}..{fmt(r[-1])}" for r in out)


def cron_to_oncalendar(expr: str) -> list[str]:
    """systemd OnCalendar= values equivalent to a 5-field cron expression (or @daily, @hourly, ...).

    Cron runs when the day of month OR the weekday matches if both are restricted; one OnCalendar
    requires both, so that case gives two values (a timer may have several OnCalendar= lines).
    """
    check_cron(expr)
    minute, hour, dom, month, dow = croniter(expr).expanded

    def field(values: list[Any], fmt: Callable[[int], str] = lambda v: f"{v:02d}") -> str:
        return "*" if values == ["*"] else _ranges(sorted(int(v) for v in values), fmt)

    days = sorted({int(v) % 7 for v in dow}) if dow != ["*"] else ["*"]
    time_part = f"{field(hour)}:{field(minute)}:00"
    date_part = f"*-{field(month)}-{field(dom)}"
    weekdays = "" if days == ["*"] else _ranges(days, lambda v: DOW_NAMES[v]) + " "
    if dom != ["*"] and days != ["*"]:
        return [f"*-{field(month)}-{field(dom)} {time_part}", f"{weekdays}*-{field(month)}-* {time_part}"]
    return [f"{weekdays}{date_part} {time_part}"]


def due_runs(schedule: Schedule, last_run: datetime | None, now: datetime) -> datetime | None:
    """The slot to run now: the latest slot after `last_run` (or after the schedule was made) and not after
    `now`; None if there is none. Missed slots collapse into the latest one."""
    since = last_run or datetime.fromisoformat(schedule.created)
    latest = latest_slot(schedule.cron, now)
    return latest if latest > since else None


def latest_slot(cron: str, now: datetime) -> datetime:
    """The most recent slot not after `now` (what a systemd timer that just fired is running)."""
    floor = now.replace(second=0, microsecond=0)
    return floor if croniter.match(cron, floor) else croniter(cron, now).get_prev(datetime)


def instance_name(campaign: str, slot: datetime) -> str:
    return f"{campaign}-{slot.strftime(SLOT_FORMAT)}"


def instance_matrix(text: str, campaign: str, slot: datetime, source: str) -> tuple[str, str]:
    """(instance campaign name, matrix text) for one slot of a matrix given as YAML text."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("campaign"), str):
        raise UsageError(f"{source}: not a matrix file (no campaign name)")
    name = instance_name(doc["campaign"], slot)
    doc["campaign"] = name
    header = f"# instance {name} of schedule {campaign}, slot {slot.isoformat()}, made from {source}\n"
    return name, header + yaml.safe_dump(doc, sort_keys=False)


def unit_files(schedule: Schedule, python: str, home: Path, workdir: str) -> dict[str, str]:
    """The systemd service and timer of a schedule: file name -> text."""
    unit = f"{UNIT_PREFIX}{schedule.name}"
    calendars = "".join(f"OnCalendar={c}\n" for c in cron_to_oncalendar(schedule.cron))
    command = shlex.join([python, "-m", "runner.cli", "schedule", "run-now", schedule.name, "--latest-slot"])
    service = (
        "[Unit]\n"
        f"Description=runner campaign schedule {schedule.name} ({schedule.cron})\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\nType=oneshot\n"
        f"Environment={shlex.quote('RUNNER_HOME=' + str(home))}\n"
        f"WorkingDirectory={workdir}\n"
        f"ExecStart={command}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=runner campaign schedule {schedule.name} ({schedule.cron})\n\n"
        f"[Timer]\n{calendars}Persistent=true\nUnit={unit}.service\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{unit}.service": service, f"{unit}.timer": timer}


# ----- the schedule file ----------------------------------------------------------------------------
def load_schedules(home: Path | None = None) -> dict[str, Schedule]:
    path = (home or runner_home()) / "schedules.yml"
    if not path.exists():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    if doc.get("version") != SCHEDULES_VERSION:
        raise UsageError(f"{path}: schedules file version {doc.get('version')!r} is not {SCHEDULES_VERSION}")
    try:
        return {s["name"]: Schedule(**s) for s in doc.get("schedules", [])}
    except TypeError as exc:
        raise UsageError(f"{path}: bad schedule entry: {exc}") from None


def _save(schedules: dict[str, Schedule], home: Path) -> None:
    doc = {"version": SCHEDULES_VERSION, "schedules": [asdict(s) for _, s in sorted(schedules.items())]}
    write_bytes_atomic(home / "schedules.yml", yaml.safe_dump(doc, sort_keys=False).encode())


def get_schedule(name: str, home: Path | None = None) -> Schedule:
    schedules = load_schedules(home)
    if name not in schedules:
        raise UnknownNameError(f"no schedule {name!r}; known: {', '.join(sorted(schedules)) or 'none'}")
    return schedules[name]


def systemd_available() -> bool:
    """PID 1 is systemd and systemctl answers."""
    try:
        if Path("/proc/1/comm").read_text().strip() != "systemd":
            return False
        return subprocess.run(["systemctl", "is-system-running"], capture_output=True, timeout=10).returncode in (0, 1)
    except (OSError, subprocess.TimeoutExpired):
        return False


def _resolve_inventory(matrix_path: Path, given: str | None) -> str | None:
    """The inventory a launch of this matrix from here would use, as an absolute path (None: the project's)."""
    if given:
        return str(Path(given).resolve())
    doc = yaml.safe_load(matrix_path.read_text()) or {}
    hosts = doc.get("hosts") if isinstance(doc, dict) else None
    if isinstance(hosts, dict) and hosts.get("inventory"):
        return str(Path(hosts["inventory"]).resolve())
    beside = matrix_path.parent / "inventory"
    return str(beside.resolve()) if beside.exists() else None


def add_schedule(
    name: str,
    matrix: Path,
    cron: str,
    *,
    datasets: Path,
    inventory: str | None = None,
    home: Path | None = None,
    use_systemd: bool | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Record a schedule; with systemd, also install and start its timer. Returns the schedule."""
    from runner.matrix.load import load_matrix

    home = home or runner_home()
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"schedule name {name!r} is not allowed; allowed: letters, digits, _ and -, at most 40")
    check_cron(cron)
    parsed = load_matrix(matrix)  # refuse a broken matrix now, not at 2 a.m.
    if len(parsed.campaign) + 1 + len("20261126T0200") > CAMPAIGN_MAX:
        raise UsageError(f"{matrix}: campaign name {parsed.campaign!r} is too long for dated instances; at most {CAMPAIGN_MAX - 14} characters")
    schedules = load_schedules(home)
    if name in schedules:
        raise UsageError(f"schedule {name!r} exists; `runner schedule remove {name}` first")
    systemd = systemd_available() if use_systemd is None else use_systemd
    sched = Schedule(
        name=name, matrix=str(Path(matrix).resolve()), cron=cron, datasets=str(Path(datasets).resolve()),
        inventory=_resolve_inventory(Path(matrix), inventory), mode="systemd" if systemd else "serve",
        created=(now or datetime.now().astimezone()).isoformat(timespec="seconds"),
    )
    if systemd:
        _install_units(sched, home)
    schedules[name] = sched
    _save(schedules, home)
    return sched


def _unit_dir() -> Path:
    return Path("/etc/systemd/system") if os.geteuid() == 0 else Path.home() / ".config" / "systemd" / "user"


def _systemctl(*args: str) -> None:
    user = [] if os.geteuid() == 0 else ["--user"]
    proc = subprocess.run(["systemctl", *user, *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise UsageError(f"systemctl {' '.join(args)} failed: {(proc.stderr.strip() or 'no message').splitlines()[0]}")


def _install_units(sched: Schedule, home: Path) -> None:
    unit_dir = _unit_dir()
    for fname, text in unit_files(sched, sys.executable, home, os.getcwd()).items():
        write_bytes_atomic(unit_dir / fname, text.encode())
    _systemctl("daemon-reload")
    _systemctl("enable", "--now", f"{UNIT_PREFIX}{sched.name}.timer")


def remove_schedule(name: str, home: Path | None = None) -> Schedule:
    home = home or runner_home()
    sched = get_schedule(name, home)
    if sched.mode == "systemd":
        _systemctl("disable", "--now", f"{UNIT_PREFIX}{name}.timer")
        for suffix in (".service", ".timer"):
            (_unit_dir() / f"{UNIT_PREFIX}{name}{suffix}").unlink(missing_ok=True)
        _systemctl("daemon-reload")
    schedules = load_schedules(home)
    del schedules[name]
    _save(schedules, home)
    return sched


def last_run(name: str, home: Path | None = None) -> datetime | None:
    path = (home or runner_home()) / "state" / f"{name}.json"
    if not path.exists():
        return None
    return datetime.fromisoformat(json.loads(path.read_text())["last_slot"])


# ----- running -------------------------------------------------------------------------------------
def run_slot(sched: Schedule, slot: datetime, launch: Launcher, *, home: Path | None = None, quiet: bool = True) -> Any:
    """Run (or resume) the instance of `slot` with `launch` (the CLI's launch_matrix); records the slot as run
    unless interrupted. Returns the Summary."""
    home = home or runner_home()
    source = Path(sched.matrix)
    try:
        text = source.read_text()
    except OSError as exc:
        raise UsageError(f"schedule {sched.name}: cannot read its matrix {source}: {exc.strerror}") from None
    name, instance_text = instance_matrix(text, sched.name, slot, str(source))
    path = home / "instances" / f"{name}.yml"
    write_bytes_atomic(path, instance_text.encode())
    summary = launch(path, datasets=Path(sched.datasets), inventory=sched.inventory, quiet=quiet)
    if not summary.interrupted:
        write_json_atomic(home / "state" / f"{sched.name}.json", {"last_slot": slot.isoformat(), "campaign": name, "success": summary.success})
    return summary


def serve_once(launch: Launcher, home: Path | None = None, now: datetime | None = None, on_run: Callable[[str], None] | None = None) -> list[str]:
    """Run every serve-mode schedule that is due at `now`; returns the instance names run."""
    home = home or runner_home()
    now = now or datetime.now().astimezone()
    ran = []
    for sched in load_schedules(home).values():
        if sched.mode != "serve":
            continue
        slot = due_runs(sched, last_run(sched.name, home), now)
        if slot is None:
            continue
        if on_run:
            on_run(f"schedule {sched.name}: running slot {slot.isoformat()}")
        ran.append(run_slot(sched, slot, launch, home=home).campaign)
    return ran


def seconds_to_next(home: Path | None = None, now: datetime | None = None, cap: float = 60.0) -> float:
    """Seconds until the next slot of any serve-mode schedule, at most `cap` (the file is re-read then)."""
    now = now or datetime.now().astimezone()
    nexts = [croniter(s.cron, now).get_next(datetime) for s in load_schedules(home).values() if s.mode == "serve"]
    return max(0.5, min([cap, *((n - now).total_seconds() for n in nexts)]))


def serve(launch: Launcher, home: Path | None = None, *, once: bool = False, on_run: Callable[[str], None] | None = None) -> list[str]:
    """Run due schedules now, then (unless once) keep running them at their slots until interrupted."""
    ran = serve_once(launch, home, on_run=on_run)
    while not once:
        time.sleep(seconds_to_next(home))
        ran += serve_once(launch, home, on_run=on_run)
    return ran
