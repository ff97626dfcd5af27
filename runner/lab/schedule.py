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
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from croniter import CroniterBadDateError, croniter

from runner.errors import RunnerError, UnknownNameError, UsageError
from runner.matrix.load import load_matrix, read_yaml
from runner.paths import runner_home
from runner.records.store import CAMPAIGN_NAME, write_bytes_atomic, write_json_atomic
from runner.textfile import check_file_name, read_text, read_yaml_file

# What runs a schedule's instance: runner.cli.launch.launch_matrix(path, datasets=, inventory=, quiet=) -> Summary.
Launcher = Callable[..., Any]

SCHEDULES_VERSION = 1  # 1: name, matrix, cron, datasets, inventory, mode, created
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # always fullmatch: a schedule's name names its files
NAME_ALLOWED = "letters, digits, _ and -, at most 40"
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
    """Refuse what cron and a systemd timer would not both run the same way: anything but five fields (or
    @daily, @hourly, ...), croniter's extensions (seconds, years, L, W, #) and expressions no date matches."""
    fields = expr.split()
    alias = len(fields) == 1 and fields[0].startswith("@")
    if not (alias or len(fields) == 5) or not croniter.is_valid(expr):
        raise UsageError(f"cron expression {expr!r} is not valid; e.g. '0 2 * * *' (minute hour day month weekday)")
    if not alias and (re.search(r"[A-Za-z]", fields[2]) or "#" in fields[4]):
        raise UsageError(f"cron expression {expr!r}: L, W and # are not supported (a systemd timer has no equivalent); "
                         "use numbers, ranges, lists and steps")
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise UsageError(f"cron expression {expr!r} never fires: no date has that day in that month") from None


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
    try:
        doc = read_yaml(text)  # as the matrix loader reads it: `retry: {on: ...}` keeps its key "on"
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("campaign"), str):
        raise UsageError(f"{source}: not a matrix file (no campaign name)")
    check_file_name(doc["campaign"], f"{source}: campaign", CAMPAIGN_NAME, "letters, digits, . _ -")  # names instances/<name>.yml
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
def _schedules_file(home: Path | None) -> Path:
    return (home or runner_home()) / "schedules.yml"


def _read_entries(path: Path) -> list[Any]:
    """The raw entries of the schedules file ([] when there is none); refuses a file that cannot be read at all."""
    if not path.exists():
        return []
    doc = read_yaml_file(path, "schedules file")  # special, oversized, hostile YAML: one line naming it
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: not a schedules file (a mapping with version and schedules)")
    if doc.get("version") != SCHEDULES_VERSION:
        raise UsageError(f"{path}: schedules file version {doc.get('version')!r} is not {SCHEDULES_VERSION}")
    entries = doc.get("schedules") or []
    if not isinstance(entries, list):
        raise UsageError(f"{path}: schedules: not a list")
    return entries


def parse_entry(entry: Any, where: str) -> Schedule:
    """One entry of the schedules file, checked as `add` checked it. Raises UsageError naming `where`."""
    fields = list(Schedule.__dataclass_fields__)
    if isinstance(entry, dict) and isinstance(entry.get("created"), datetime):  # written by hand, unquoted
        entry = {**entry, "created": entry["created"].isoformat()}
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: not a mapping with {', '.join(fields)}")
    if unknown := sorted(set(map(str, entry)) - set(fields)):
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(fields)}")
    if missing := [f for f in fields if f not in entry]:
        raise UsageError(f"{where}: {missing[0]!r} is required but missing")
    for key in fields:
        if not isinstance(entry[key], str) and not (key == "inventory" and entry[key] is None):
            raise UsageError(f"{where}: {key}: {entry[key]!r} is not a string")
    if not NAME_RE.fullmatch(entry["name"]):
        raise UsageError(f"{where}: name: {entry['name']!r} is not allowed; allowed: {NAME_ALLOWED}")
    if entry["mode"] not in ("systemd", "serve"):
        raise UsageError(f"{where}: mode: {entry['mode']!r} is not allowed; allowed: systemd, serve")
    try:
        check_cron(entry["cron"])
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    try:
        created = datetime.fromisoformat(entry["created"])
    except ValueError:
        created = None
    if created is None or created.tzinfo is None:
        raise UsageError(f"{where}: created: {entry['created']!r} is not an ISO time with a UTC offset")
    return Schedule(**entry)


def load_schedules(home: Path | None = None, problems: list[str] | None = None) -> dict[str, Schedule]:
    """The schedules by name. A bad entry raises UsageError, or, when `problems` is given, is left out and
    described there in one line (`schedule list` and `serve` go on with the others)."""
    path = _schedules_file(home)
    out: dict[str, Schedule] = {}
    for i, entry in enumerate(_read_entries(path)):
        try:
            sched = parse_entry(entry, _where(path, i, entry))
            if sched.name in out:
                raise UsageError(f"{_where(path, i, entry)}: a second schedule named {sched.name!r}")
        except UsageError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        out[sched.name] = sched
    return out


def _where(path: Path, index: int, entry: Any) -> str:
    name = _entry_name(entry)
    return f"{path}: schedules[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _save(entries: list[Any], home: Path) -> None:
    """Write the schedules file. Entries are written back as read: a bad one is kept for its owner to fix."""
    doc = {"version": SCHEDULES_VERSION, "schedules": entries}
    _write(_schedules_file(home), yaml.safe_dump(doc, sort_keys=False).encode())


def _write(path: Path, data: bytes | dict[str, Any]) -> None:
    """Write a file under RUNNER_HOME atomically; a home that cannot be written is one line, not a traceback."""
    try:
        if isinstance(data, bytes):
            write_bytes_atomic(path, data)
        else:
            write_json_atomic(path, data)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}; RUNNER_HOME must be a writable directory") from None


def _entry_name(entry: Any) -> Any:
    return entry.get("name") if isinstance(entry, dict) else None


def get_schedule(name: str, home: Path | None = None) -> Schedule:
    """The schedule of that name; a bad entry of another schedule does not matter, a bad entry of this one is refused."""
    path = _schedules_file(home)
    entries = _read_entries(path)
    for i, entry in enumerate(entries):
        if _entry_name(entry) == name:
            return parse_entry(entry, _where(path, i, entry))
    known = sorted(n for n in map(_entry_name, entries) if isinstance(n, str))
    raise UnknownNameError(f"no schedule {name!r}; known: {', '.join(known) or 'none'}")


def systemd_available() -> bool:
    """PID 1 is systemd and systemctl answers."""
    try:
        if Path("/proc/1/comm").read_text().strip() != "systemd":
            return False
        return subprocess.run(["systemctl", "is-system-running"], capture_output=True, timeout=10).returncode in (0, 1)
    except (OSError, subprocess.TimeoutExpired):
        return False


def _resolve_inventory(matrix: Any, given: str | None) -> str | None:
    """The inventory a launch of this matrix from here would use, as an absolute path (None: the project's)."""
    # Here, not at the top: the inventory module brings Fabric and paramiko (0.1-0.3 s), and only adding a schedule
    # resolves an inventory.
    from runner.provision.inventory import inventory_files, refuse_scripts

    path = given or matrix.inventory
    if path:
        if not Path(path).exists():
            raise UsageError(f"inventory {path} does not exist")
        if Path(path).is_file():
            read_text(Path(path), "inventory file")  # a binary or non-UTF-8 file is refused now, not at 2 a.m.
    else:
        beside = matrix.path.parent / "inventory"
        path = beside if beside.exists() else None
    if path is not None and given is None:  # recorded, it is named to every launch: an unnamed one may hold no script
        refuse_scripts(inventory_files(Path(path)))
    return None if path is None else str(Path(path).resolve())


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
    home = home or runner_home()
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"schedule name {name!r} is not allowed; allowed: {NAME_ALLOWED}")
    check_cron(cron)
    if Path(datasets).exists() and not Path(datasets).is_dir():
        raise UsageError(f"--datasets {datasets}: not a directory; give the directory the instances' datasets go to")
    parsed = load_matrix(matrix)  # refuse a broken matrix now, not at 2 a.m.
    if len(parsed.campaign) + 1 + len("20261126T0200") > CAMPAIGN_MAX:
        raise UsageError(f"{matrix}: campaign name {parsed.campaign!r} is too long for dated instances; at most {CAMPAIGN_MAX - 14} characters")
    entries = _read_entries(_schedules_file(home))
    if any(_entry_name(e) == name for e in entries):
        raise UsageError(f"schedule {name!r} exists; `runner schedule remove {name}` first")
    systemd = systemd_available() if use_systemd is None else use_systemd
    sched = Schedule(
        name=name, matrix=str(Path(matrix).resolve()), cron=cron, datasets=str(Path(datasets).resolve()),
        inventory=_resolve_inventory(parsed, inventory), mode="systemd" if systemd else "serve",
        created=(now or datetime.now().astimezone()).isoformat(timespec="seconds"),
    )
    if systemd:
        _install_units(sched, home)
    _save([*entries, asdict(sched)], home)
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


def remove_schedule(name: str, home: Path | None = None) -> str:
    """Remove a schedule (and its timer), a bad entry of that name too; returns its datasets directory."""
    home = home or runner_home()
    check_file_name(name, "schedule name", NAME_RE, NAME_ALLOWED)  # names the unit files it removes
    entries = _read_entries(_schedules_file(home))
    mine = [e for e in entries if _entry_name(e) == name]
    if not mine:
        known = sorted(n for n in map(_entry_name, entries) if isinstance(n, str))
        raise UnknownNameError(f"no schedule {name!r}; known: {', '.join(known) or 'none'}")
    if any(e.get("mode") == "systemd" for e in mine):
        _systemctl("disable", "--now", f"{UNIT_PREFIX}{name}.timer")
        for suffix in (".service", ".timer"):
            (_unit_dir() / f"{UNIT_PREFIX}{name}{suffix}").unlink(missing_ok=True)
        _systemctl("daemon-reload")
    _save([e for e in entries if _entry_name(e) != name], home)
    return str(mine[0].get("datasets", "?"))


def last_run(name: str, home: Path | None = None) -> datetime | None:
    path = (home or runner_home()) / "state" / f"{check_file_name(name, 'schedule name', NAME_RE, NAME_ALLOWED)}.json"
    if not path.exists():
        return None
    try:
        slot = datetime.fromisoformat(json.loads(read_text(path, "state file"))["last_slot"])
    except (ValueError, TypeError, KeyError, RecursionError):
        slot = None
    if slot is None or slot.tzinfo is None:
        raise UsageError(f"{path}: damaged (no last_slot with a UTC offset); delete it to run the next slot as if never run")
    return slot


# ----- running -------------------------------------------------------------------------------------
def run_slot(sched: Schedule, slot: datetime, launch: Launcher, *, home: Path | None = None, quiet: bool = True) -> Any:
    """Run (or resume) the instance of `slot` with `launch` (the CLI's launch_matrix); records the slot as run
    unless interrupted. Returns the Summary."""
    home = home or runner_home()
    text = read_text(Path(sched.matrix), "matrix file")
    name, instance_text = instance_matrix(text, sched.name, slot, sched.matrix)
    path = home / "instances" / f"{name}.yml"
    _write(path, instance_text.encode())
    summary = launch(path, datasets=Path(sched.datasets), inventory=sched.inventory, quiet=quiet)
    if not summary.interrupted:
        _write(home / "state" / f"{sched.name}.json", {"last_slot": slot.isoformat(), "campaign": name, "success": summary.success})
    return summary


def serve_once(launch: Launcher, home: Path | None = None, now: datetime | None = None, on_run: Callable[[str], None] | None = None,
               on_problem: Callable[[str], None] | None = None) -> list[str]:
    """Run every serve-mode schedule that is due at `now`; returns the instance names run. A bad schedule (its
    entry in the file, its state, its matrix) is reported in one line through `on_problem` (default `on_run`)
    and the others go on; a slot that failed so counts as run: it is not tried again every minute."""
    home = home or runner_home()
    now = now or datetime.now().astimezone()
    problems: list[str] = []
    ran = []
    for sched in load_schedules(home, problems).values():
        if sched.mode != "serve":
            continue
        slot = None
        try:
            slot = due_runs(sched, last_run(sched.name, home), now)
            if slot is None:
                continue
            if on_run:
                on_run(f"schedule {sched.name}: running slot {slot.isoformat()}")
            summary = run_slot(sched, slot, launch, home=home)
            ran.append(summary.campaign)
            if getattr(summary, "interrupted", False):  # SIGTERM or Ctrl-C stopped the slot's campaign (its measured
                raise KeyboardInterrupt                  # trials kept): serving stops too, as a supervisor expects
        except RunnerError as exc:
            problems.append(f"schedule {sched.name}: {exc}")
            if slot is not None:
                state = {"last_slot": slot.isoformat(), "campaign": None, "success": False, "error": str(exc)}
                _write(home / "state" / f"{sched.name}.json", state)
    for line in problems:
        (on_problem or on_run or (lambda _: None))(line)
    return ran


def seconds_to_next(home: Path | None = None, now: datetime | None = None, cap: float = 60.0) -> float:
    """Seconds until the next slot of any serve-mode schedule, at most `cap` (the file is re-read then)."""
    now = now or datetime.now().astimezone()
    try:
        schedules = load_schedules(home, [])
    except UsageError:  # reported by serve_once; read again after `cap`
        schedules = {}
    nexts = [croniter(s.cron, now).get_next(datetime) for s in schedules.values() if s.mode == "serve"]
    return max(0.5, min([cap, *((n - now).total_seconds() for n in nexts)]))


def serve(launch: Launcher, home: Path | None = None, *, once: bool = False, on_run: Callable[[str], None] | None = None) -> list[str]:
    """Run due schedules now, then (unless once) keep running them at their slots until interrupted. Each problem
    is reported once, not at every re-read; a schedules file that cannot be read at all ends `--once` (bad input)
    and is read again at the next minute otherwise."""
    seen: set[str] = set()

    def problem(msg: str) -> None:
        if msg not in seen and on_run:
            on_run(msg)
        seen.add(msg)

    def one_pass() -> list[str]:
        try:
            return serve_once(launch, home, on_run=on_run, on_problem=problem)
        except UsageError as exc:
            if once:
                raise
            problem(str(exc))
            return []

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main else None  # SIGTERM ends serve, mid-campaign too
    try:
        ran = one_pass()
        while not once:
            time.sleep(seconds_to_next(home))
            ran += one_pass()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return ran


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
