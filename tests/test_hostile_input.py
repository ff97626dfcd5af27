"""Hostile input at the edge of plan/launch, fit, dataset publish/fetch and schedule: one line naming the file
or option and what is wrong, exit status 2, no traceback, nothing written (issue 14)."""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from runner.cli import main
from runner.cli.fit import describe, fit_csv
from runner.errors import UsageError
from runner.lab import schedule as sch
from runner.matrix.load import load_matrix, parse_matrix
from runner.records import share

PROJECT = Path(__file__).resolve().parents[1]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error the last command printed: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runner: "), err
    return lines[0]


# ----- matrix files (plan, launch) -------------------------------------------------------------------
MATRIX_CORPUS = [
    ("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00", "a binary file, not a matrix file"),
    ("latin1", "campaign: caf\xe9\n".encode("latin-1"), "line 1: not UTF-8 text (byte 0xe9)"),
    ("latin1_line3", b"# a\n# b\ncampaign: \xff\n", "line 3: not UTF-8 text"),
    ("empty", b"", "the file is empty"),
    ("comments_only", b"# nothing here\n\n", "the file is empty"),
    ("deep", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ("truncated", b"campaign: x\nworkload: {name: lockbench\n", "not valid YAML"),
    ("list", b"- campaign\n- workload\n", "must be a mapping"),
]


@pytest.mark.parametrize(("data", "expect"), [c[1:] for c in MATRIX_CORPUS], ids=[c[0] for c in MATRIX_CORPUS])
@pytest.mark.parametrize("command", ["plan", "launch"])
def test_bad_matrix_bytes(command: str, data: bytes, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yml"
    path.write_bytes(data)
    assert main([command, str(path), *(["--datasets", str(tmp_path / "ds")] if command == "launch" else [])]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"runner: {path}: ") and expect in line, line
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_matrix_that_cannot_be_read(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dir.yml").mkdir()
    assert main([command, str(tmp_path / "dir.yml")]) == 2
    assert f"{tmp_path / 'dir.yml'}: is a directory, not a matrix file" in one_line_error(capsys)
    (tmp_path / "file").write_text("x")
    assert main([command, str(tmp_path / "file" / "m.yml")]) == 2
    assert "cannot read: Not a directory" in one_line_error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of mode 000")
def test_unreadable_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yml"
    path.write_text("campaign: x\n")
    path.chmod(0)
    assert main(["plan", str(path)]) == 2
    assert "cannot read: Permission denied" in one_line_error(capsys)


def test_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_bytes(b"\xef\xbb\xbf" + (PROJECT / "matrix.yml").read_bytes())
    assert load_matrix(path).campaign == "lockbench-scaling"


@pytest.mark.parametrize("argv", [["--cpus", "0"], ["--cpus", "-3"], ["--hosts", "0"], ["--show", "-2"], ["--cpus", "x"]])
def test_plan_options_out_of_range(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", str(PROJECT / "matrix.yml"), *argv])
    assert info.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_inventory_that_cannot_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_bytes(b"all:\n  hosts: {\xff: {}}\n")
    assert main(["plan", str(PROJECT / "matrix.yml"), "--inventory", str(inv)]) == 2
    assert "not UTF-8 text" in one_line_error(capsys)
    inv.write_bytes(b"all: " + b"[" * 5000 + b"\n")
    assert main(["plan", str(PROJECT / "matrix.yml"), "--inventory", str(inv)]) == 2
    assert "nested too deeply" in one_line_error(capsys)


# ----- fit --csv ---------------------------------------------------------------------------------------
GOOD_ROWS = "1,100\n2,190\n4,350\n8,500\n16,520\n"
CSV_CORPUS = [
    ("empty", b"", "the file is empty"),
    ("blank_lines", b"\n\n  \n", "the file is empty"),
    ("binary", b"threads,throughput\n\x00\x01\x02", "a binary file, not a CSV file"),
    ("not_utf8", b"threads,throughput\n1,1\xff\n", "line 2: not UTF-8 text"),
    ("header_only", b"threads,throughput\n", "no data rows after the header"),
    ("non_numeric", f"threads,throughput\n{GOOD_ROWS}32,abc\n".encode(), "line 7: column 'throughput': 'abc' is not a number"),
    ("empty_cell", b"threads,throughput\n1,100\n2,\n4,300\n8,400\n", "line 3: column 'throughput': an empty cell is not a number"),
    ("negative", b"threads,throughput\n1,100\n2,-190\n4,350\n8,500\n", "line 3: column 'throughput': -190 is not allowed"),
    ("zero_throughput", b"threads,throughput\n1,100\n2,0\n4,350\n8,500\n", "line 3: column 'throughput': 0 is not allowed"),
    ("zero_load", b"threads,throughput\n0,100\n2,190\n4,350\n8,500\n", "line 2: column 'threads': 0 is not allowed"),
    ("nan", b"threads,throughput\n1,100\n2,nan\n4,350\n8,500\n", "nan is not allowed"),
    ("inf", b"threads,throughput\n1,100\n2,190\n4,inf\n8,500\n", "inf is not allowed"),
    ("huge", b"threads,throughput\n1,100\n2,1e999\n4,350\n8,500\n", "1e999 is not allowed"),
    ("ragged", b"threads,throughput\n1,100,5\n2,190\n4,350\n8,500\n", "line 2: 3 fields, but the header has 2"),
    ("short_row", b"threads,throughput\n1,100\n2\n4,350\n8,500\n", "line 3: 1 fields, but the header has 2"),
    ("open_quote", b'threads,throughput\n1,"100\n', "not valid CSV"),
    ("duplicate_column", b"threads,threads,throughput\n1,1,100\n2,2,190\n4,4,350\n", "column 'threads' appears 2 times"),
    ("missing_column", b"load,throughput\n1,100\n", "no column 'threads' (--x); columns: load, throughput"),
    ("two_loads", b"threads,throughput\n1,100\n1,105\n2,190\n2,185\n", "2 distinct value(s) of 'threads'; a USL fit has 3 parameters"),
    ("one_point", b"threads,throughput\n1,100\n", "1 distinct value(s)"),
]


@pytest.mark.parametrize(("data", "expect"), [c[1:] for c in CSV_CORPUS], ids=[c[0] for c in CSV_CORPUS])
def test_bad_csv(data: bytes, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.csv"
    path.write_bytes(data)
    assert main(["fit", "usl", "--csv", str(path), "--x", "threads", "--y", "throughput", "--bootstrap", "0"]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"runner: {path}: ") and expect in line, line


def test_csv_that_is_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "usl", "--csv", str(tmp_path), "--x", "a", "--y", "b"]) == 2
    assert "is a directory, not a CSV file" in one_line_error(capsys)
    assert main(["fit", "usl", "--csv", str(tmp_path / "none.csv"), "--x", "a", "--y", "b"]) == 2
    assert "no such CSV file" in one_line_error(capsys)


def test_amdahl_needs_two_loads(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("n,x\n1,10\n2,19\n")
    assert fit_csv(path, "n", "x", model="amdahl", bootstrap=0).n_levels == 2
    path.write_text("n,x\n2,10\n2,19\n")
    with pytest.raises(UsageError, match="an Amdahl fit has 2 parameters"):
        fit_csv(path, "n", "x", model="amdahl")


@pytest.mark.parametrize("argv", [["--bootstrap", "-1"], ["--bootstrap", "10000000"], ["--seed", "-1"], ["--seed", "x"]])
def test_fit_options_out_of_range(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "usl", "--csv", "runs.csv", "--x", "n", "--y", "x", *argv])
    assert info.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


TINY = re.compile(r"\de-(1[3-9]|[2-9]\d|\d{3})\b")  # 1e-13 and smaller: rounding noise, not a result


def test_linear_scaling_prints_zeros_not_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lin.csv"
    path.write_text("threads,throughput\n1,100\n2,200\n4,400\n8,800\n")
    assert main(["fit", "usl", "--csv", str(path), "--x", "threads", "--y", "throughput", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert not TINY.search(out), out
    assert re.search(r"sigma \(contention\)\s+0 ", out) and "none: linear scaling" in out
    fit = fit_csv(path, "threads", "throughput", bootstrap=200)
    assert fit.sigma == 0.0 and fit.kappa == 0.0 and fit.sigma_ci == (0.0, 0.0)


def test_exact_fit_has_no_zero_width_intervals(tmp_path: Path) -> None:
    """Three loads, one value each, three parameters: nothing to resample, so no interval (not [v, v])."""
    path = tmp_path / "runs.csv"
    path.write_text("threads,throughput\n1,100\n2,190\n4,350\n")
    fit = fit_csv(path, "threads", "throughput", bootstrap=100)
    assert fit.ci_method == "none" and all(math.isnan(v) for v in fit.sigma_ci) and fit.poor_fit
    assert "no intervals" in describe(fit) and "95% CI" not in describe(fit)


def test_peak_below_one_reads_as_no_peak(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("threads,throughput\n1,100\n2,50\n4,25\n8,12.5\n16,6.25\n")  # X(N) = 100 / N
    fit = fit_csv(path, "threads", "throughput", bootstrap=100)
    text = describe(fit)
    assert fit.peak_n < 1 and "none: throughput falls from N = 1 on" in text
    peak_line = next(line for line in text.splitlines() if line.startswith("peak N*"))
    assert not re.search(r"\de-\d", peak_line), text  # no 2.274e-08 for a peak


# ----- dataset publish / fetch URLs ----------------------------------------------------------------------
@pytest.mark.parametrize("url", ["nosuch://bucket/x", "ftp://127.0.0.1/x", "memory://x", "zip://x", "simplecache::s3://b/x"])
@pytest.mark.parametrize("action", ["publish", "fetch"])
def test_unknown_url_scheme(action: str, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["dataset", "--datasets", str(tmp_path / "ds"), action, *(["shared"] if action == "publish" else []), url]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "unknown URL scheme" in line and "known: file, sftp, s3" in line, line


@pytest.mark.parametrize("action", ["publish", "fetch"])
def test_missing_backend_names_its_package(action: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(share.SHARE_SCHEMES, "s3", ("no_such_backend_pkg",))
    argv = ["dataset", "--datasets", str(tmp_path / "ds"), action, *(["shared"] if action == "publish" else []), "s3://bucket/lab"]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "the s3:// scheme needs the Python package no_such_backend_pkg: pip install no_such_backend_pkg" in line


def test_real_missing_backends_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    for url, package in (("s3://bucket/lab/shared", "s3fs"), ("https://lab.example/shared", "aiohttp")):
        if importlib.util.find_spec(package) is not None:
            continue  # installed here: then the backend is tried for real (tests/test_dataset_share.py)
        assert main(["dataset", "--datasets", str(tmp_path), "fetch", url]) == 2
        assert f"pip install {package}" in one_line_error(capsys)


def test_publish_refusals_come_before_packing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No campaign exists: the URL is refused first, without packing anything."""
    assert main(["dataset", "--datasets", str(tmp_path), "publish", "nothing", "http://127.0.0.1:9/lab"]) == 2
    assert "cannot publish over http, which is read-only" in one_line_error(capsys)
    assert main(["dataset", "--datasets", str(tmp_path), "publish", "nothing", " "]) == 2
    assert "empty URL" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_fetch_over_loopback_that_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), "fetch", f"sftp://127.0.0.1:{port}/x"]) == 1
    assert "cannot connect" in one_line_error(capsys)
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), "fetch", (tmp_path / "none").as_uri()]) == 2  # bad input
    assert "no such archive" in one_line_error(capsys)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- schedules -------------------------------------------------------------------------------------------
def test_instance_of_the_project_matrix_is_runnable(home: Path) -> None:
    """YAML 1.1 would write `retry: {on: ...}` back as `true:` and the instance would be refused."""
    slot = datetime(2026, 11, 26, 2, 0).astimezone()
    name, text = sch.instance_matrix((PROJECT / "matrix.yml").read_text(), "nightly", slot, "matrix.yml")
    instance = parse_matrix(text, Path(f"{name}.yml"))
    original = load_matrix(PROJECT / "matrix.yml")
    assert instance.campaign == "lockbench-scaling-20261126T0200"
    assert instance.retry == original.retry and instance.axes == original.axes and instance.params == original.params


def test_run_slot_hands_a_valid_instance_to_launch(home: Path, tmp_path: Path) -> None:
    assert main(["schedule", "add", "nightly", str(PROJECT / "matrix.yml"), "--cron", "0 2 * * *",
                 "--datasets", str(tmp_path / "ds"), "--no-systemd"]) == 0
    launched = []

    def launch(path: Path, **_: object) -> SimpleNamespace:
        launched.append(load_matrix(path))
        return SimpleNamespace(interrupted=False, success=True, campaign=launched[-1].campaign)

    slot = datetime(2026, 11, 26, 2, 0).astimezone()
    assert sch.run_slot(sch.get_schedule("nightly"), slot, launch).campaign == "lockbench-scaling-20261126T0200"
    assert launched[0].retry.on == frozenset({"failed", "timeout", "host"})


@pytest.mark.parametrize(("cron", "expect"), [
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6 *", "never fires"),
    ("* * * * * *", "is not valid"),
    ("0 0 1 1 * 2030", "is not valid"),
    ("0 2 L * *", "L, W and # are not supported"),
    ("0 2 15W * *", "L, W and # are not supported"),
    ("0 2 * * 5#3", "L, W and # are not supported"),
    ("@reboot", "is not valid"),
    ("", "is not valid"),
])
def test_cron_that_cannot_run_is_refused(cron: str, expect: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "add", "n", str(PROJECT / "matrix.yml"), "--cron", cron, "--no-systemd"]) == 2
    assert expect in one_line_error(capsys)
    assert not (home / "schedules.yml").exists()


def test_leap_day_is_a_real_slot() -> None:
    sch.check_cron("0 0 29 2 *")


def test_schedule_add_honours_runner_inventory(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RUNNER_INVENTORY", str(PROJECT / "inventory" / "hosts.yml"))
    assert main(["schedule", "add", "n", str(PROJECT / "matrix.yml"), "--cron", "0 2 * * *", "--no-systemd"]) == 0
    assert sch.get_schedule("n").inventory == str(PROJECT / "inventory" / "hosts.yml")
    monkeypatch.setenv("RUNNER_INVENTORY", str(tmp_path / "nowhere.yml"))
    assert main(["schedule", "add", "m", str(PROJECT / "matrix.yml"), "--cron", "0 2 * * *", "--no-systemd"]) == 2
    assert "nowhere.yml does not exist" in one_line_error(capsys)


def _write_schedules(home: Path, entries: list[object]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "schedules.yml").write_text(yaml.safe_dump({"version": 1, "schedules": entries}, sort_keys=False))


def _entry(name: str, cron: str = "* * * * *", **change: object) -> dict[str, object]:
    created = (datetime.now().astimezone() - timedelta(minutes=5)).isoformat(timespec="seconds")
    entry = {"name": name, "matrix": str(PROJECT / "matrix.yml"), "cron": cron, "datasets": "/nonexistent/ds",
             "inventory": None, "mode": "serve", "created": created}
    return {**entry, **change}


BAD_ENTRIES = [
    (_entry("never", cron="0 0 30 2 *"), "(never): cron expression '0 0 30 2 *' never fires"),
    (_entry("junk", cron="every night"), "(junk): cron expression 'every night' is not valid"),
    (_entry("moded", mode="cron"), "(moded): mode: 'cron' is not allowed; allowed: systemd, serve"),
    (_entry("naive", created="2026-11-20T12:00:00"), "(naive): created: '2026-11-20T12:00:00' is not an ISO time with a UTC offset"),
    (_entry("extra", colour="blue"), "(extra): unknown key 'colour'"),
    ({"name": "partial"}, "(partial): 'matrix' is required but missing"),
    (_entry("typed", cron=5), "(typed): cron: 5 is not a string"),
    ("just a string", "schedules[0]: not a mapping"),
]


@pytest.mark.parametrize(("entry", "expect"), BAD_ENTRIES, ids=[str(e[1]).split(")")[0].strip("(") for e in BAD_ENTRIES])
def test_bad_schedule_entry_does_not_stop_the_others(entry: object, expect: str, home: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _write_schedules(home, [entry, _entry("good")])
    assert main(["schedule", "list"]) == 2
    captured = capsys.readouterr()
    assert "good" in captured.out and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines

    ran, said = [], []

    def launch(path: Path, **_: object) -> SimpleNamespace:
        ran.append(path)
        return SimpleNamespace(interrupted=False, success=True, campaign=load_matrix(path).campaign)

    assert len(sch.serve_once(launch, home, on_run=said.append)) == 1 and len(ran) == 1
    assert any(expect in line for line in said), said
    assert sch.get_schedule("good").name == "good"
    if isinstance(entry, dict):  # run-now of the bad one itself: refused with the same line
        with pytest.raises(UsageError, match=re.escape(expect)):
            sch.get_schedule(str(entry["name"]))


def test_bad_entry_is_kept_by_add_and_can_be_removed(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_schedules(home, [_entry("feb30", cron="0 0 30 2 *")])
    assert main(["schedule", "add", "good", str(PROJECT / "matrix.yml"), "--cron", "0 2 * * *", "--no-systemd"]) == 0
    names = [e["name"] for e in yaml.safe_load((home / "schedules.yml").read_text())["schedules"]]
    assert names == ["feb30", "good"]  # the bad entry is left for its owner to see, not dropped silently
    assert main(["schedule", "remove", "feb30"]) == 0
    capsys.readouterr()
    assert main(["schedule", "list"]) == 0
    assert "feb30" not in capsys.readouterr().out
    assert list(sch.load_schedules(home)) == ["good"]


@pytest.mark.parametrize(("data", "expect"), [
    (b"\x00\x01", "a binary file, not a schedules file"),
    (b"version: 1\nschedules: [\xff]\n", "not UTF-8 text"),
    (b"- a\n", "not a schedules file"),
    (b"version: 2\nschedules: []\n", "schedules file version 2 is not 1"),
    (b"version: 1\nschedules: {a: 1}\n", "schedules: not a list"),
    (b"version: 1\nschedules: [\n", "not valid YAML"),
])
def test_schedules_file_that_cannot_be_read(data: bytes, expect: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home.mkdir(parents=True)
    (home / "schedules.yml").write_bytes(data)
    assert main(["schedule", "list"]) == 2
    assert expect in one_line_error(capsys)
    assert main(["serve", "--once"]) == 2
    assert expect in one_line_error(capsys)


def test_damaged_state_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_schedules(home, [_entry("good")])
    (home / "state").mkdir()
    (home / "state" / "good.json").write_text("{not json")
    assert main(["schedule", "list"]) == 2
    captured = capsys.readouterr()
    assert "unknown" in captured.out and "good.json: damaged" in captured.err and "Traceback" not in captured.err


def test_a_failing_schedule_is_reported_and_not_retried_every_minute(home: Path) -> None:
    _write_schedules(home, [_entry("gone", matrix="/nonexistent/m.yml"), _entry("good")])
    said: list[str] = []

    def launch(path: Path, **_: object) -> SimpleNamespace:
        return SimpleNamespace(interrupted=False, success=True, campaign=load_matrix(path).campaign)

    assert len(sch.serve_once(launch, home, on_run=said.append)) == 1
    assert any("schedule gone: /nonexistent/m.yml: no such matrix file" in line for line in said), said
    state = json.loads((home / "state" / "gone.json").read_text())
    assert state["success"] is False and "no such matrix file" in state["error"]
    assert sch.serve_once(launch, home) == []  # that slot counts as run


def test_runner_home_that_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "file" / "home"))
    assert main(["schedule", "add", "n", str(PROJECT / "matrix.yml"), "--cron", "0 2 * * *", "--no-systemd"]) == 2
    assert "schedules.yml: cannot write: Not a directory" in one_line_error(capsys)
