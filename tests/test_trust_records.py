"""Recorded data is never lost or duplicated (issue 20), end to end: a generator of damaged datasets (each
recorded file truncated, garbled (also one page behind a sound footer), of the wrong schema, or holding another trial), a directory that cannot be
read (CAP_DAC_OVERRIDE dropped: root reads mode-000 files otherwise) and a full disk (a small tmpfs of the
test's own). After each fault the rows per trial_id are counted: every trial once, nothing lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.cli import main
from runner.records.store import AttemptRecord, CampaignStore, read_campaign
from runner.records.metric import Metric
from tests.test_cli_hostile import make_campaign, tree
from tests.test_hostile_input import one_line_error

PROJECT = Path(__file__).resolve().parents[1]
RUNNER = [sys.executable, "-m", "runner.cli"]
ENV = {**os.environ, "PYTHONPATH": str(PROJECT), "COLUMNS": "1000"}  # this checkout's runner, whatever is installed
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
N = 9


def write_matrix(tmp: Path, name: str = "trust") -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: command, params: {run: 'echo {\\\"v\\\": $RUNNER_N}'}}\n"
        f"axes: {{n: {list(range(1, N + 1))}}}\nrepetitions: 1\ntimeout: 30\n"
    )
    return path


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(matrix, dataset) of one real launch of N trials, made once; tests work on copies."""
    tmp = tmp_path_factory.mktemp("launched")
    matrix = write_matrix(tmp)
    done = subprocess.run([*RUNNER, "launch", str(matrix), "--datasets", str(tmp / "ds")], cwd=tmp, capture_output=True,
                          text=True, timeout=900, env=ENV)  # a bound against a hang, not a speed
    assert done.returncode == 0, done.stderr
    return matrix, tmp / "ds" / "trust"


@pytest.fixture
def dataset(launched: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    matrix, original = launched
    shutil.copytree(original, tmp_path / "ds" / "trust")
    shutil.copy(matrix, tmp_path / matrix.name)
    return tmp_path / matrix.name, tmp_path / "ds" / "trust"


def rows_per_trial(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(ok trial rows, metric rows) per trial_id, read from the dataset as report reads it."""
    metrics, trials, _ = read_campaign(root)
    ok = trials[trials["status"] == "ok"]
    return ok.groupby("trial_id").size().to_dict(), metrics.groupby("trial_id").size().to_dict()


# ----- the generator of damaged datasets ------------------------------------------------------------------
def _truncate(path: Path, other: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path, other: Path) -> None:
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes(data[:4] + bytes(b ^ 0x5A for b in data[4:half]) + data[half:])


def _garble_page(path: Path, other: Path) -> None:
    """The first page's header garbled behind a sound footer: only reading the pages finds it."""
    chunk = pq.read_metadata(path).row_group(0).column(0)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + 6] = bytes(b ^ 0xFF for b in data[start:start + 6])
    path.write_bytes(bytes(data))


def _flip_value(path: Path, other: Path) -> None:
    """One bit of the last column's values flipped, every header and the footer sound: the file still decodes
    (to another number); only the page's CRC tells."""
    meta = pq.read_metadata(path)
    chunk = meta.row_group(0).column(meta.num_columns - 1)
    last = chunk.data_page_offset - 1 if chunk.has_dictionary_page else chunk.data_page_offset + chunk.total_compressed_size - 1
    data = bytearray(path.read_bytes())
    data[last] ^= 0x01
    path.write_bytes(bytes(data))


def _wrong_schema(path: Path, other: Path) -> None:
    trial = path.name.split(".")[0]
    pq.write_table(pa.table({"trial_id": [trial], "attempt": ["one"], "status": [3], "metric": ["v"], "value": ["x"]}), path)


def _no_column(path: Path, other: Path) -> None:
    pq.write_table(pa.table({"something": [1]}), path)


def _other_trial(path: Path, other: Path) -> None:
    shutil.copy(other, path)


DAMAGE: dict[str, Callable[[Path, Path], None]] = {
    "truncated": _truncate, "garbled": _garble, "garbled_page": _garble_page, "wrong_schema": _wrong_schema,
    "no_column": _no_column, "other_trial": _other_trial, "flipped_value": _flip_value,
}


@pytest.mark.parametrize("table", ["trials", "metrics"])
@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_record_is_named_by_status_and_report(kind: str, table: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Before a relaunch, status and report refuse the dataset naming the damaged file (neither counts it)."""
    root = make_campaign(tmp_path / "ds")
    files = sorted((root / table).glob("workload=*/*.parquet"))
    DAMAGE[kind](files[0], files[1])
    before = tree(tmp_path)
    for argv in (["status", "c"], ["report", "c", "--out", str(tmp_path / "rep")]):
        assert main([*argv, "--datasets", str(tmp_path / "ds")]) == 2
        line = one_line_error(capsys)
        assert line.startswith(f"runner: {files[0]}: damaged {table} data: ") and "runner launch" in line, line
    assert tree(tmp_path) == before


def test_relaunch_moves_damaged_records_aside_and_measures_them_again(dataset: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one path, one line
    matrix, root = dataset
    ok_before, metrics_before = rows_per_trial(root)
    assert len(ok_before) == N and set(ok_before.values()) == {1}
    trials = sorted((root / "trials").glob("workload=*/*.parquet"))
    metric_files = sorted((root / "metrics").glob("workload=*/*.parquet"))
    damaged = {  # one trial per kind of damage, in either table
        "truncated": trials[0], "garbled": metric_files[1], "wrong_schema": trials[2], "no_column": metric_files[3],
        "other_trial": trials[4], "garbled_page": metric_files[6], "flipped_value": metric_files[7],
    }
    for kind, path in damaged.items():
        DAMAGE[kind](path, trials[5] if path.parent.parent.name == "trials" else metric_files[5])
    assert main(["launch", str(matrix), "--datasets", str(root.parent)]) == 0
    out = capsys.readouterr()
    for path in damaged.values():
        assert f"warning: {path}: damaged" in out.out + out.err
        assert (root / "damaged" / path.parent.parent.name / path.parent.name / path.name).exists()
    assert f"{N - len(damaged)} already recorded, {len(damaged)} ok now" in out.out
    ok_after, metrics_after = rows_per_trial(root)
    assert ok_after == ok_before and metrics_after == metrics_before  # every trial once, none lost, none twice
    assert main(["status", "trust", "--datasets", str(root.parent)]) == 0
    assert f"{N} done" in capsys.readouterr().out


# ----- a directory that cannot be read ---------------------------------------------------------------------
def test_an_unreadable_directory_is_an_error_not_empty(dataset: tuple[Path, Path]) -> None:
    """Taken for empty, it made a relaunch measure again and overwrite what was recorded."""
    matrix, root = dataset
    ok_before, metrics_before = rows_per_trial(root)
    files_before = tree(root / "trials")
    part = next((root / "trials").glob("workload=*"))
    part.chmod(0o300)  # writable, not readable: the worst case (a relaunch could write, but not see)
    try:
        for argv in (["launch", str(matrix)], ["status", "trust"]):
            done = subprocess.run([*NO_DAC, *RUNNER, *argv, "--datasets", str(root.parent)], cwd=matrix.parent,
                                  capture_output=True, text=True, timeout=900, env=ENV)
            lines = [line for line in done.stderr.splitlines() if line.startswith("runner: ")]
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert lines == [f"runner: {part}: cannot read the directory: Permission denied; what it holds is unknown, "
                             "so nothing is taken as recorded or measured again"], done.stderr
    finally:
        part.chmod(0o755)
    assert tree(root / "trials") == files_before
    assert rows_per_trial(root) == (ok_before, metrics_before)


def make_reportable(datasets: Path, name: str = "c") -> Path:
    """A campaign of 4 loads x 2 repetitions written through CampaignStore (no launch): enough for a report."""
    store = CampaignStore(datasets / name)
    with store:
        store.initialise(campaign=name, workload="command", matrix_text=f"campaign: {name}\n", matrix_sha256="0" * 64,
                         axis_types={"threads": "int"}, trial_count=8, seed=1, provenance={"controller": "ctl"})
        store.write_host_facts("h1", {"hostname": "h1", "cpus": 2})
        for i, (n, rep) in enumerate((n, rep) for n in (1, 2, 3, 4) for rep in (1, 2)):
            store.write_attempt(name, "command", {"threads": "int"}, AttemptRecord(
                trial_id=f"{i + 1:016x}", cell_id=f"cell{n}", repetition=rep, attempt=1, host="h1", status="ok", error=None,
                started_at=1.0, ended_at=2.0, wall_s=1.0, workload_wall_s=1.0, params={"threads": n},
                metrics=(Metric("throughput", 100.0 * n / (1 + 0.1 * n) + rep, "ops/s"),)))
    return store.root


def fill(mount: Path) -> None:
    """Write to `mount` until it is full."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----- a full disk -----------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted for the test and filled up; unmounted after."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        fill(mount)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_report_pack_import_status(full_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    root = make_reportable(ds)
    rows = rows_per_trial(root)
    before = tree(full_disk)

    assert main(["report", "c", "--datasets", str(ds), "--out", str(full_disk / "rep")]) == 1
    line = one_line_error(capsys)
    assert "No space left on device" in line, line
    assert tree(full_disk) == before and not (full_disk / "rep").exists()

    assert main(["dataset", "--datasets", str(ds), "pack", "c", "-o", str(full_disk / "c.tar.gz")]) == 1
    line = one_line_error(capsys)
    assert "No space left on device" in line, line
    assert tree(full_disk) == before

    archive = tmp_path / "c.tar.gz"
    assert main(["dataset", "--datasets", str(ds), "pack", "c", "-o", str(archive)]) == 0
    capsys.readouterr()
    assert main(["dataset", "--datasets", str(full_disk), "import", str(archive)]) == 1
    line = one_line_error(capsys)
    assert "No space left on device" in line, line
    assert tree(full_disk) == before

    assert main(["status", "c", "--datasets", str(ds)]) == 0  # reading needs no room
    assert rows_per_trial(root) == rows


def test_an_earlier_report_survives_a_failed_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    make_reportable(ds)
    out = tmp_path / "rep"
    assert main(["report", "c", "--datasets", str(ds), "--out", str(out)]) == 0
    first = tree(out)
    assert "report.html" in first
    mount = out  # the report directory itself becomes a full disk holding the earlier report
    saved = tmp_path / "saved"
    shutil.copytree(out, saved)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        shutil.copytree(saved, mount, dirs_exist_ok=True)
        fill(mount)
        kept = tree(mount)
        capsys.readouterr()
        assert main(["report", "c", "--datasets", str(ds), "--out", str(out)]) == 1
        assert "No space left on device" in one_line_error(capsys)
        assert tree(mount) == kept  # the earlier report whole, no staging left
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_store_lists_with_errors(tmp_path: Path) -> None:
    """The store's listing of recorded files is sorted and skips staging files."""
    root = make_campaign(tmp_path / "ds")
    part = next((root / "trials").glob("workload=*"))
    (part / ".x.parquet.1.tmp").write_bytes(b"")
    assert [p.name for p in CampaignStore(root)._files("trials")] == sorted(p.name for p in part.glob("*.parquet"))


# ----- no permission (CAP_DAC_OVERRIDE dropped) -------------------------------------------------------------
def test_no_permission_is_one_line_and_leaves_nothing(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    matrix, root = dataset
    ro = tmp_path / "ro"
    ro.mkdir()
    archive = tmp_path / "t.tar.gz"
    assert main(["dataset", "--datasets", str(root.parent), "pack", "trust", "-o", str(archive)]) == 0
    ro.chmod(0o555)
    rows = rows_per_trial(root)
    try:
        for argv, expect in [
            (["dataset", "--datasets", str(root.parent), "pack", "trust", "-o", str(ro / "t.tar.gz")], f"runner: {ro / 't.tar.gz'}: "),
            (["dataset", "--datasets", str(ro), "import", str(archive)], f"runner: {ro}: "),
            (["launch", str(matrix), "--datasets", str(ro)], f"runner: {ro / 'trust'}: "),
        ]:
            done = subprocess.run([*NO_DAC, *RUNNER, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=ENV)
            lines = [line for line in done.stderr.splitlines() if line.startswith("runner: ")]
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert len(lines) == 1 and lines[0].startswith(expect) and "Permission denied" in lines[0], done.stderr
            assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
    assert rows_per_trial(root) == rows


# ----- trial ids made before equal numbers were one value ----------------------------------------------------
def _initialise(store: CampaignStore, text: str) -> bool:
    return store.initialise(campaign="c", workload="command", matrix_text=text, matrix_sha256="0" * 64,
                            axis_types={"x": "int"}, trial_count=1, seed=1, provenance={})


def test_a_dataset_whose_trial_ids_changed_is_refused_not_measured_twice(tmp_path: Path) -> None:
    """A dataset launched when `2.0` and `2` were two cells: relaunched, its trials would get new ids and be
    measured again beside their records. One line instead; datasets without such floats resume as before."""
    import json

    from runner.errors import DatasetError

    old = "campaign: c\nworkload: {name: command, params: {run: 'true'}}\naxes: {x: [1, 2.0]}\ntimeout: 5.0\n"
    for text, refused in ((old, True), (old.replace("2.0", "2"), False)):
        store = CampaignStore(tmp_path / f"ds{int(refused)}" / "c")
        with store:
            assert _initialise(store, text) is False
        meta = json.loads(store.meta_path.read_text())
        assert meta["numbers"] == "normal"
        del meta["numbers"]  # as a runner before this change wrote it
        store.meta_path.write_text(json.dumps(meta))
        with store:
            if refused:
                with pytest.raises(DatasetError, match=r"launched by a runner that told 2.0 from 2: .* a new campaign name"):
                    _initialise(store, text)
            else:
                assert _initialise(store, text) is True
