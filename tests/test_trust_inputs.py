"""Hostile input by class (issue 20), across every command that reads a file the user names: special files
(FIFO, device, /dev/zero) and oversized files, hostile YAML (duplicate keys, alias bombs, NaN and infinity),
names that would become paths, numbers written in other ways, and matrices too large to expand. Each gets one
line and exit status 2; nothing hangs, nothing fills the memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.cli import main
from runner.errors import MatrixError, UsageError
from runner.matrix.expand import expand_cells
from runner.matrix.load import MAX_TRIALS, parse_matrix
from runner.textfile import MAX_CSV_BYTES, MAX_TEXT_BYTES, load_yaml, read_text
from runner.trials import plan
from tests.test_campaign_holds import local_inventory
from tests.test_hostile_input import one_line_error

MATRIX = "campaign: c\nworkload: {name: lockbench}\naxes:\n  threads: [1, 2]\n"


# ----- special and oversized files, wherever a file is read ------------------------------------------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _oversized(path: Path) -> Path:
    with open(path, "wb") as f:  # sparse: no disk used
        f.truncate((MAX_CSV_BYTES if path.suffix == ".csv" else MAX_TEXT_BYTES) + 1)
    return path


SPECIAL = {  # kind -> (make it at this path, what the one line says)
    "fifo": (_fifo, "is a FIFO (named pipe), not a"),
    "dev_zero": (lambda p: Path("/dev/zero"), "is a character device, not a"),
    "dev_null": (lambda p: Path("/dev/null"), "is a character device, not a"),
    "oversized": (_oversized, "bytes, more than a"),
}


def _argv_matrix(f: Path, tmp: Path) -> list[str]:
    return ["plan", str(f)]


def _argv_inventory(f: Path, tmp: Path) -> list[str]:
    m = tmp / "m.yml"
    m.write_text(MATRIX)
    return ["plan", str(m), "--inventory", str(f)]


def _argv_csv(f: Path, tmp: Path) -> list[str]:
    return ["fit", "usl", "--csv", str(f), "--x", "threads", "--y", "throughput", "--bootstrap", "0"]


def _argv_tune(f: Path, tmp: Path) -> list[str]:
    inventory, _ = local_inventory(tmp)
    return ["provision", "--inventory", str(inventory), "--tune", str(f), "--datasets", str(tmp / "out")]


def _argv_schedules(f: Path, tmp: Path) -> list[str]:
    home = Path(os.environ["RUNNER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if f != home / "schedules.yml":
        (home / "schedules.yml").symlink_to(f)
    return ["schedule", "list"]


def _named(reader: str, f: Path) -> Path:
    """The path the one line names: the schedules file is always RUNNER_HOME/schedules.yml (here a link to `f`)."""
    return Path(os.environ["RUNNER_HOME"]) / "schedules.yml" if reader == "schedules" else f


def _argv_known_hosts(f: Path, tmp: Path) -> list[str]:
    m = tmp / "m.yml"
    m.write_text(MATRIX)
    return ["plan", str(m), "--known-hosts", str(f)]


READERS: dict[str, Callable[[Path, Path], list[str]]] = {
    "matrix": _argv_matrix, "inventory": _argv_inventory, "csv": _argv_csv, "tune": _argv_tune, "schedules": _argv_schedules,
    "known_hosts": _argv_known_hosts,
}


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("reader", READERS)
def test_special_and_oversized_files_are_refused(reader: str, kind: str, tmp_path: Path, home: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO used to hang forever, /dev/zero to end in MemoryError: one line naming the file, exit 2."""
    make, expect = SPECIAL[kind]
    f = make(tmp_path / f"given.{'csv' if reader == 'csv' else 'yml'}")
    argv = READERS[reader](f, tmp_path)
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert f"{_named(reader, f)}: " in line and expect in line, line


def test_the_reader_never_blocks_on_a_fifo_with_a_writer_gone(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "m.yml")
    with pytest.raises(UsageError, match="FIFO"):
        read_text(fifo, "matrix file")


# ----- hostile YAML, in every YAML file a user gives ------------------------------------------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
YAML_CORPUS = {  # name -> (document, what the one line says)
    "duplicate_key": ("campaign: a\ncampaign: b\n", "duplicate key 'campaign' (first at line 1)"),
    "duplicate_nested": ("x:\n  y: 1\n  y: 2\n", "duplicate key 'y'"),
    "alias_bomb": (BOMB, "expands to more than"),
    "alias_cycle": ("a: &a [*a]\n", "a cycle"),
    "nan": ("timeout: .nan\n", "'.nan' is not a finite number"),
    "inf": ("timeout: -.inf\n", "'-.inf' is not a finite number"),
}


@pytest.mark.parametrize("case", YAML_CORPUS)
def test_the_yaml_loader_refuses(case: str) -> None:
    text, expect = YAML_CORPUS[case]
    with pytest.raises(UsageError, match="^f.yml: ") as err:
        load_yaml(text, "f.yml")
    assert expect in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["duplicate_key", "alias_bomb", "nan"])
@pytest.mark.parametrize("reader", ["matrix", "inventory", "tune", "schedules"])  # the YAML files
def test_hostile_yaml_in_every_user_file(reader: str, case: str, tmp_path: Path, home: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    text, expect = YAML_CORPUS[case]
    f = tmp_path / "given.yml"
    f.write_text(text)
    assert main(READERS[reader](f, tmp_path)) == 2
    line = one_line_error(capsys)
    assert f"{_named(reader, f)}: " in line and expect in line, line


def test_yaml_12_numbers() -> None:
    assert load_yaml("a: 1e3\nb: 1.5e-3\nc: 1\nd: '1e3'\ne: 0x10\n", "f") == {"a": 1000.0, "b": 0.0015, "c": 1, "d": "1e3", "e": 16}


# ----- the matrix: names, numbers, rules, size -----------------------------------------------------------
@pytest.mark.parametrize(("text", "expect"), [
    ('campaign: "c\\n"\nworkload: {name: lockbench}\n', "campaign: 'c\\n' is not allowed"),
    (MATRIX + "exclude:\n  - {threads: 3}\n", "exclude[0].threads: 3 is not a value of axis 'threads'; its values: 1, 2"),
    (MATRIX + "timeout: .nan\n", "'.nan' is not a finite number"),
    (MATRIX + "repetitions: 2.5\n", "repetitions"),
    (MATRIX + "timeout: .inf\n", "not a finite number"),
    (MATRIX + "timeout: 1e308\n", "timeout: 1e+308 is greater than the maximum of 604800"),
    (MATRIX + "hosts: {group: local, busy_timeout: 1e12}\n", "is greater than the maximum of 31536000"),
])
def test_bad_matrix_values(text: str, expect: str) -> None:
    with pytest.raises(MatrixError) as err:
        parse_matrix(text)
    assert expect in str(err.value), err.value


def test_equal_numbers_are_one_cell() -> None:
    m = parse_matrix("campaign: c\nworkload: {name: lockbench, params: {duration: 1e0}}\naxes:\n  threads: [1, 2.0]\n"
                     "include:\n  - {threads: 1.0}\n  - {threads: 2}\nrepetitions: 2.0\ntimeout: 1e3\n")
    assert m.repetitions == 2 and type(m.repetitions) is int and m.timeout == 1000.0
    assert expand_cells(m.axes, m.zip, m.exclude, m.include) == [{"threads": 1}, {"threads": 2}]
    trials = plan(m, {"h": 2})
    assert len(trials) == 4 and len({t.trial_id for t in trials}) == 4
    same = parse_matrix("campaign: c\nworkload: {name: lockbench, params: {duration: 1}}\naxes:\n  threads: [1, 2]\nrepetitions: 2\n")
    assert {t.trial_id for t in plan(same, {"h": 2})} == {t.trial_id for t in trials}


def test_exclude_by_an_equal_number_drops_the_cell() -> None:
    m = parse_matrix(MATRIX + "exclude:\n  - {threads: 2.0}\n")
    assert expand_cells(m.axes, m.zip, m.exclude, m.include) == [{"threads": 1}]


def test_a_matrix_too_large_is_counted_before_expanding() -> None:
    axes = "".join(f"  a{i}: [{', '.join(map(str, range(10)))}]\n" for i in range(7))
    with pytest.raises(MatrixError, match=r"10000000 cells x 3 repetitions = 30000000 trials, more than the 1000000") as err:
        parse_matrix(f"campaign: c\nworkload: {{name: command, params: {{run: 'true'}}}}\naxes:\n{axes}")
    assert str(MAX_TRIALS) in str(err.value)


def test_a_relative_value_past_the_maximum_is_refused_at_plan_time() -> None:
    m = parse_matrix('campaign: c\nworkload: {name: lockbench}\naxes:\n  threads: [1, "1000000%"]\n')
    with pytest.raises(MatrixError, match=r"axes.threads: '1000000%' is 20000 on 2 CPUs, more than the maximum 4096"):
        plan(m, {"h": 2})


# ----- names that become file names -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../evil", "/etc/evil", ".hidden"])
def test_inventory_host_names_that_are_paths_are_refused(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(f'all:\n  children:\n    local:\n      hosts:\n        "{name}":\n          ansible_connection: local\n')
    m = tmp_path / "m.yml"
    m.write_text(MATRIX + f"hosts: {{group: local, inventory: {inv}}}\n")
    assert main(["plan", str(m)]) == 2
    line = one_line_error(capsys)
    assert f"host {name!r} is not allowed as a file name" in line, line


@pytest.mark.parametrize("name", ["../x", "a/b", "x\n"])
def test_schedule_names_that_are_paths_are_refused(name: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "remove", name]) == 2
    assert "not allowed" in one_line_error(capsys)


def test_instance_of_a_matrix_whose_campaign_is_a_path(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from runner.lab.schedule import instance_matrix

    with pytest.raises(UsageError, match="campaign '../../x' is not allowed as a file name"):
        instance_matrix("campaign: ../../x\nworkload: {name: lockbench}\n", "s", datetime.now(UTC), "m.yml")


# ----- `runner plan` runs an inventory script only when named ----------------------------------------------
def test_plan_does_not_run_an_inventory_script_found_by_default(tmp_path: Path, home: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    inv = tmp_path / "inventory"
    inv.mkdir()
    script = inv / "dynamic.py"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n"
                      "echo '{\"local\": {\"hosts\": [\"localhost\"]}, \"_meta\": {\"hostvars\": {\"localhost\": {\"ansible_connection\": \"local\"}}}}'\n")
    script.chmod(0o755)
    m = tmp_path / "m.yml"
    m.write_text(MATRIX + "hosts: local\n")
    assert main(["plan", str(m)]) == 2  # inventory/ beside the matrix, found by default
    line = one_line_error(capsys)
    assert f"{script}: an executable file, which Ansible would run" in line and "--inventory" in line, line
    assert not marker.exists()
    m.write_text(MATRIX + f"hosts: {{group: local, inventory: {inv}}}\n")  # named by the matrix: not by the user
    assert main(["plan", str(m)]) == 2
    assert not marker.exists()
    assert main(["plan", str(m), "--inventory", str(script)]) == 0  # named on the command line: it runs
    assert marker.exists()


def test_plan_help_says_when_it_runs_an_inventory_script(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "executable inventory file (an Ansible dynamic inventory script) is run only when you name the inventory" in out


# ----- sizes: a fit of a large CSV ------------------------------------------------------------------------
def test_the_bootstrap_of_a_large_fit_is_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit never resamples replicates x rows at once: chunks of at most BOOTSTRAP_CELLS values."""
    import numpy as np

    from runner.analysis import usl

    sizes: list[int] = []
    real = usl._batch_lm

    def spy(n, xb, p, fix_kappa):  # noqa: ANN001, ANN202 - a wrapper
        sizes.append(xb.size)
        return real(n, xb, p, fix_kappa)

    monkeypatch.setattr(usl, "_batch_lm", spy)
    monkeypatch.setattr(usl, "BOOTSTRAP_CELLS", 1000)
    n = np.repeat([1.0, 2.0, 4.0, 8.0], 50)
    x = 100 * n / (1 + 0.05 * (n - 1)) + np.tile(np.linspace(-1, 1, 50), 4)
    fit = usl.fit_usl(n, x, bootstrap=100, seed=1)
    assert max(sizes) <= 1000 and sum(sizes) == 100 * n.size
    assert fit.bootstrap > 0 and fit.sigma_ci[0] <= fit.sigma <= fit.sigma_ci[1]


# ----- clearer messages: a group that includes itself -------------------------------------------------------
@pytest.mark.parametrize(("groups", "loop"), [
    ("    g:\n      hosts:\n        localhost:\n          ansible_connection: local\n      children:\n        g:\n", "g -> g"),
    ("    a:\n      children:\n        b:\n          children:\n            a:\n", "a -> b -> a"),
])
def test_a_self_including_inventory_group_says_so(groups: str, loop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n" + groups)
    m = tmp_path / "m.yml"
    m.write_text(MATRIX)
    assert main(["plan", str(m), "--inventory", str(inv)]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"runner: {inv}: group '{loop[0]}' includes itself through its children ({loop})"), line


# ----- properties -----------------------------------------------------------------------------------------
@given(st.integers(min_value=-(10**12), max_value=10**12), st.booleans())
def test_an_integral_float_and_its_int_are_one_cell(value: int, nested: bool) -> None:
    from runner.trials import cell_id

    as_float = [float(value)] if nested else float(value)
    as_int = [value] if nested else value
    assert cell_id("w", {"x": as_float}, None) == cell_id("w", {"x": as_int}, None)
    assert cell_id("w", {"x": True}, None) != cell_id("w", {"x": 1}, None)  # a boolean stays a boolean


@given(st.text(min_size=1, max_size=30))
def test_a_checked_file_name_never_leaves_its_directory(name: str) -> None:
    from runner.textfile import check_file_name

    try:
        checked = check_file_name(name, "host")
    except UsageError:
        return
    assert (Path("/d") / f"{checked}.json").resolve().parent == Path("/d")


# ----- a file that cannot be read (CAP_DAC_OVERRIDE dropped: root reads mode 000 otherwise) -----------------
def test_an_unreadable_matrix_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    project = Path(__file__).resolve().parents[1]
    m = tmp_path / "m.yml"
    m.write_text(MATRIX)
    m.chmod(0)
    done = subprocess.run(["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
                           sys.executable, "-m", "runner.cli", "plan", str(m)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(project)})
    assert done.returncode == 2 and done.stderr == f"runner: {m}: cannot read: Permission denied\n", done.stderr


def test_schedule_add_does_not_record_an_unnamed_inventory_script(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A schedule's inventory is named to every launch it makes: one found beside the matrix may hold no script."""
    inv = tmp_path / "inventory"
    inv.mkdir()
    script = inv / "dynamic.sh"
    script.write_text("#!/bin/sh\necho '{}'\n")
    script.chmod(0o755)
    m = tmp_path / "m.yml"
    m.write_text(MATRIX)
    assert main(["schedule", "add", "nightly", str(m), "--cron", "0 2 * * *", "--datasets", str(tmp_path / "ds")]) == 2
    assert f"{script}: an executable file, which Ansible would run" in one_line_error(capsys)
    assert not (home / "schedules.yml").exists()
