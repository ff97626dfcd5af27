"""Schedules: cron -> OnCalendar, which slot is due, dated instances; `serve` running a real campaign."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from runner.cli import schedule as schedule_cli
from runner.cli import serve as serve_cli
from runner.cli.launch import launch_matrix
from runner.errors import UsageError
from runner.lab import schedule as sch
from runner.records.store import read_campaign

PROJECT = Path(__file__).resolve().parents[1]
TZ = datetime.now().astimezone().tzinfo


def cli(module: object, argv: list[str]) -> int:
    """Run one subcommand module's parser and run() (as `runner ARGV` does once it is registered)."""
    parser = argparse.ArgumentParser(prog="runner")
    module.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 2 * * *", ["*-*-* 02:00:00"]),
        ("*/15 8-18 * * 1-5", ["Mon..Fri *-*-* 08..18:00,15,30,45:00"]),
        ("30 4 1,15 jan,jul *", ["*-01,07-01,15 04:30:00"]),
        ("0 0 * * 7", ["Sun *-*-* 00:00:00"]),
        ("5 3 * * 5-7", ["Sun,Fri..Sat *-*-* 03:05:00"]),
        ("@hourly", ["*-*-* *:00:00"]),
        # day of month OR weekday in cron: two OnCalendar lines
        ("0 0 1 * 0", ["*-*-01 00:00:00", "Sun *-*-* 00:00:00"]),
    ],
)
def test_cron_to_oncalendar(cron: str, expected: list[str]) -> None:
    assert sch.cron_to_oncalendar(cron) == expected
    if shutil.which("systemd-analyze"):  # systemd's own parser accepts every value
        proc = subprocess.run(["systemd-analyze", "calendar", *expected], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_bad_cron_is_refused() -> None:
    with pytest.raises(UsageError, match="'61 \\* \\* \\* \\*' is not valid"):
        sch.cron_to_oncalendar("61 * * * *")


def _sched(cron: str = "0 2 * * *", created: str = "2026-11-20T12:00:00") -> sch.Schedule:
    return sch.Schedule("n", "/m.yml", cron, "/ds", None, "serve", at(created).isoformat())


def test_due_runs_collapses_missed_slots() -> None:
    s = _sched()
    assert sch.due_runs(s, None, at("2026-11-20T13:00:00")) is None  # made after today's slot
    # down for three nights: one run, for the latest slot
    assert sch.due_runs(s, None, at("2026-11-23T05:00:00")) == at("2026-11-23T02:00:00")
    assert sch.due_runs(s, at("2026-11-23T02:00:00"), at("2026-11-23T05:00:00")) is None
    assert sch.due_runs(s, at("2026-11-23T02:00:00"), at("2026-11-24T02:00:00")) == at("2026-11-24T02:00:00")
    assert sch.due_runs(s, at("2026-11-23T02:00:00"), at("2026-11-24T01:59:59")) is None


def test_instances_are_dated_and_stable() -> None:
    text = "# nightly locks\ncampaign: locks\nworkload: {name: command}\n"
    slot = at("2026-11-26T02:00:00")
    name, body = sch.instance_matrix(text, "nightly", slot, "m.yml")
    assert name == "locks-20261126T0200" and "campaign: locks-20261126T0200" in body
    assert sch.instance_matrix(text, "nightly", slot, "m.yml") == (name, body)  # same slot, same instance: resume
    with pytest.raises(UsageError, match="x.yml: not a matrix"):
        sch.instance_matrix("- a\n", "n", slot, "x.yml")


def test_unit_files() -> None:
    files = sch.unit_files(_sched("0 0 1 * 0"), "/venv/bin/python", Path("/home/a/.config/runner"), "/srv/lab")
    timer, service = files["runner-schedule-n.timer"], files["runner-schedule-n.service"]
    assert "OnCalendar=*-*-01 00:00:00\nOnCalendar=Sun *-*-* 00:00:00\nPersistent=true\n" in timer
    assert "ExecStart=/venv/bin/python -m runner.cli schedule run-now n --latest-slot" in service
    assert "Environment=RUNNER_HOME=/home/a/.config/runner" in service and "WorkingDirectory=/srv/lab" in service


def tiny_matrix(tmp: Path) -> Path:
    path = tmp / "tiny.yml"
    path.write_text(
        "campaign: tiny\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: command, params: {run: \"echo '{\\\"v\\\": 1}'\", metrics: json}}\n"
        "axes: {n: [1, 2]}\nrepetitions: 1\ntimeout: 30\n"
    )
    return path


@pytest.mark.integration
def test_serve_runs_a_due_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("RUNNER_HOME", str(home))
    now = datetime.now().astimezone()
    s = sch.add_schedule("tiny-nightly", tiny_matrix(tmp_path), "* * * * *", datasets=tmp_path / "ds", use_systemd=False, now=now - timedelta(minutes=5))
    assert s.mode == "serve" and s.inventory == str(PROJECT / "inventory")
    with pytest.raises(UsageError, match="schedule 'tiny-nightly' exists"):
        sch.add_schedule("tiny-nightly", tiny_matrix(tmp_path), "* * * * *", datasets=tmp_path / "ds", use_systemd=False)

    # `serve` in a child process, as it runs in real life (and a LocalCluster's warnings stay out of pytest's)
    proc = subprocess.run(
        [sys.executable, "-c", f"from runner.lab.schedule import *; from runner.cli.launch import launch_matrix; print(serve_once(launch_matrix, now=datetime.fromisoformat({now.isoformat()!r})))"],
        cwd=PROJECT, capture_output=True, text=True, timeout=900,  # a bound against a hang, not a speed: a loaded machine takes minutes
    )
    assert proc.returncode == 0, proc.stderr
    slot = sch.latest_slot("* * * * *", now)
    ran = [f"tiny-{slot.strftime('%Y%m%dT%H%M')}"]
    assert proc.stdout.strip().splitlines()[-1] == repr(ran)
    metrics, trials, prov = read_campaign(ran[0], tmp_path / "ds")
    assert sorted(trials["status"]) == ["ok", "ok"] and list(metrics["value"]) == [1.0, 1.0]
    assert sch.serve_once(launch_matrix, home, now=now) == []  # that slot is done
    assert sch.last_run("tiny-nightly", home) == slot

    proc = subprocess.run(  # the same slot again resumes its instance: nothing left to run
        [sys.executable, "-c", f"from runner.lab.schedule import *; from runner.cli.launch import launch_matrix; s = get_schedule('tiny-nightly'); r = run_slot(s, datetime.fromisoformat({slot.isoformat()!r}), launch_matrix); print(r.campaign, r.skipped, r.ok)"],
        cwd=PROJECT, capture_output=True, text=True, timeout=900,  # a bound against a hang, not a speed: a loaded machine takes minutes
    )
    assert proc.stdout.strip().splitlines()[-1] == f"{ran[0]} 2 0", proc.stderr

    capsys.readouterr()
    # The CLI uses the real clock: a minute may have begun since `now`, so the state says the next day's
    # slot has run (nothing can be due), whatever the time.
    state = home / "state" / "tiny-nightly.json"
    state.write_text(state.read_text().replace(slot.isoformat(), (slot + timedelta(days=1)).isoformat()))
    assert sch.last_run("tiny-nightly", home) == slot + timedelta(days=1)
    assert cli(serve_cli, ["serve", "--once"]) == 0
    assert "nothing due" in capsys.readouterr().err
    assert cli(schedule_cli, ["schedule", "list"]) == 0
    assert "tiny-nightly" in capsys.readouterr().out
    assert cli(schedule_cli, ["schedule", "remove", "tiny-nightly"]) == 0
    assert sch.load_schedules(home) == {}
