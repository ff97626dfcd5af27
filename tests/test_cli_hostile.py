"""Hostile input to the commands that read datasets and archives, and to cleanup, schedule add and launch: one
line naming the file or option and what is wrong, no traceback, nothing written (issue 14). Exit status 2 for
bad input: what the user named (an archive, a URL, a campaign, a datasets directory, an option) that is missing,
empty, damaged, of an unreadable version or of the wrong shape (UsageError, BadDatasetError); 1 when something
fails around good data (a held lock, a full disk, a server that does not answer: DatasetError). Found by sweeping every subcommand with
empty, binary, non-UTF-8 and truncated files, directories for files and the reverse, and unknown names; the
corpus of matrices, CSV files, URLs and schedules files is in tests/test_hostile_input.py."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from runner.cli import main
from runner.records import share
from runner.records.store import AttemptRecord, CampaignStore
from runner.records.metric import Metric
from tests import test_dataset_share as share_tests
from tests.test_campaign_holds import local_inventory
from tests.test_hostile_input import PROJECT, one_line_error


def make_campaign(datasets: Path, name: str = "c", thread: int | None = None) -> Path:
    """A two-trial campaign written through CampaignStore: no host, no launch. With `thread`, its metrics are
    per-thread rows only (no total rows)."""
    store = CampaignStore(datasets / name)
    with store:
        store.initialise(campaign=name, workload="command", matrix_text=f"campaign: {name}\n", matrix_sha256="0" * 64,
                         axis_types={"threads": "int"}, trial_count=2, seed=1, provenance={"controller": "ctl"})
        store.write_host_facts("h1", {"hostname": "h1", "cpus": 2})
        for n in (1, 2):
            store.write_attempt(name, "command", {"threads": "int"}, AttemptRecord(
                trial_id=f"{n:016x}", cell_id=f"cell{n}", repetition=1, attempt=1, host="h1", status="ok", error=None,
                started_at=1.0, ended_at=2.0, wall_s=1.0, workload_wall_s=1.0, params={"threads": n},
                metrics=(Metric("throughput", 100.0 * n, "ops/s", thread=thread),)))
    return store.root


def tree(path: Path) -> dict[str, int]:
    """Every file under `path` with its size: what a refused command must leave as it was."""
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


def _parquet(root: Path, table: str) -> Path:
    return next((root / table).glob("workload=*/*.parquet"))


# ----- a damaged dataset on disk: status, report, compare, dataset pack ----------------------------------------
META = {"schema_version": 5, "campaign": "c", "workload": "command", "matrix_sha256": "0" * 64, "axis_types": {"threads": "int"},
        "trials_planned": 2}
DAMAGED = [  # (id, file, new content, what the one line says after the file's path)
    ("meta_empty", "dataset.json", b"", "dataset.json: damaged dataset description: the file is empty"),
    ("meta_binary", "dataset.json", b"\x00\x01\x02", "dataset.json: damaged dataset description: not valid JSON"),
    ("meta_latin1", "dataset.json", '{"campaign": "caf\xe9"}'.encode("latin-1"), "dataset.json: damaged dataset description: not UTF-8 text"),
    ("meta_truncated", "dataset.json", json.dumps(META).encode()[:30], "dataset.json: damaged dataset description: not valid JSON"),
    ("meta_list", "dataset.json", b"[1, 2]", "dataset.json: damaged dataset description: a JSON list, not an object"),
    ("meta_campaign_type", "dataset.json", json.dumps({**META, "campaign": 5}).encode(), "dataset.json: damaged dataset description: campaign: 5 is not a string"),
    ("meta_planned_type", "dataset.json", json.dumps({**META, "trials_planned": "many"}).encode(), "trials_planned: 'many' is not an integer"),
    ("meta_no_axes", "dataset.json", json.dumps({k: v for k, v in META.items() if k != "axis_types"}).encode(), "axis_types: missing"),
    ("meta_axis_kind", "dataset.json", json.dumps({**META, "axis_types": {"threads": ["int"]}}).encode(), "axis_types.threads: ['int'] is not one of"),
    ("meta_version_list", "dataset.json", json.dumps({**META, "schema_version": [5]}).encode(), "dataset schema version [5] is not readable"),
    ("meta_version_bool", "dataset.json", json.dumps({**META, "schema_version": True}).encode(), "dataset schema version True is not readable"),
    ("provenance_latin1", "provenance.json", b"\xff\xfe", "provenance.json: damaged provenance: not UTF-8 text"),
    ("provenance_list", "provenance.json", b"[]", "provenance.json: damaged provenance: a JSON list, not an object"),
    ("facts_truncated", "hosts/h1.json", b'{"hostname": "h', "h1.json: damaged host facts: not valid JSON"),
    ("metrics_truncated", "metrics", b"PAR1\x00", "damaged metrics data: "),
    ("trials_binary", "trials", b"\x00" * 64, "damaged trials data: "),
    ("matrix_latin1", "matrix.yml", b"campaign: caf\xe9\n", "matrix.yml: damaged dataset: cannot read the campaign's matrix: not UTF-8 text"),
]
READERS = {  # the commands, and which damaged files each one reads
    "status": ("dataset.json", "trials"),
    "report": ("dataset.json", "provenance.json", "hosts/h1.json", "metrics", "trials", "matrix.yml"),
    "compare": ("dataset.json", "provenance.json", "hosts/h1.json", "metrics", "trials", "matrix.yml"),
    "pack": ("dataset.json", "provenance.json", "hosts/h1.json", "metrics", "trials", "matrix.yml"),
}


@pytest.mark.parametrize(("command", "damaged", "data", "expect"), [
    pytest.param(command, *d[1:], id=f"{command}-{d[0]}") for command, reads in READERS.items() for d in DAMAGED if d[1] in reads
])
def test_damaged_dataset(command: str, damaged: str, data: bytes, expect: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    make_campaign(ds, "base")
    root = make_campaign(ds, "c")
    target = _parquet(root, damaged) if damaged in ("metrics", "trials") else root / damaged
    target.write_bytes(data)
    argv = {"status": ["status", "c"], "report": ["report", "c", "--out", str(tmp_path / "rep")],
            "compare": ["compare", "base", "c"], "pack": ["dataset", "pack", "c", "-o", str(tmp_path / "c.tar.gz")]}[command]
    before = tree(tmp_path)
    assert main([*argv, "--datasets", str(ds)] if command != "pack" else ["dataset", "--datasets", str(ds), *argv[1:]]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"runner: {root}") and expect in line, line
    assert tree(tmp_path) == before


def test_status_without_trials_planned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-made or old dataset.json without trials_planned: what was recorded is what is planned."""
    root = make_campaign(tmp_path / "ds")
    (root / "dataset.json").write_text(json.dumps({k: v for k, v in META.items() if k != "trials_planned"}))
    assert main(["status", "c", "--datasets", str(tmp_path / "ds")]) == 0
    assert "2 trials planned; 2 done" in capsys.readouterr().out


# ----- archives whose checksums match but whose contents are damaged or crafted: verify, import, fetch ----------
def repack(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001 - edit(name, data) -> bytes | None
    """Copy an archive member by member through `edit` and sign the manifest again, as a crafted archive would."""
    return share_tests.repack(src, dst, edit, fix_manifest=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = tmp_path_factory.mktemp("made")
    make_campaign(ds)
    return share.pack("c", tmp_path_factory.mktemp("archive") / "c.tar.gz", datasets=ds)


def _archive_json(src: Path, **change: object) -> bytes:
    with tarfile.open(src) as tar:
        return json.dumps({**json.loads(tar.extractfile("c/archive.json").read()), **change}).encode()


CRAFTED = [  # (id, member, new content (None: dropped; a dict: archive.json with these changes), what the line says)
    ("archive_json_binary", "archive.json", b"\xff\xfe", "refused: archive.json is not a JSON object"),
    ("archive_json_list", "archive.json", b"[1]", "refused: archive.json is not a JSON object"),
    ("no_archive_json", "archive.json", None, "refused: no archive.json"),
    ("campaign_is_a_path", "archive.json", {"campaign": "../evil"}, "archive.json: campaign '../evil' is not a campaign name"),
    ("no_campaign", "archive.json", {"campaign": None}, "archive.json: campaign None is not a campaign name"),
    ("schema_version_list", "archive.json", {"schema_version": [5]}, "dataset schema version [5] is not readable"),
    ("no_dataset_json", "dataset.json", None, "refused: no dataset.json"),
    ("dataset_json_damaged", "dataset.json", b"{oops", "refused: dataset.json is not a JSON object"),
    ("provenance_damaged", "provenance.json", b"\xff", "refused: provenance.json is not a JSON object"),
    ("facts_damaged", "hosts/h1.json", b"[", "refused: hosts/h1.json is not a JSON object"),
    ("parquet_damaged", "trials/", b"junk", "is not a readable Parquet file"),
]
VERIFY_SEES = ("archive.json",)  # verify checks the archive itself; import also reads what it imports


@pytest.mark.parametrize(("action", "member", "content", "expect"), [
    pytest.param(action, *c[1:], id=f"{action}-{c[0]}") for action in ("verify", "import", "fetch") for c in CRAFTED
    if action != "verify" or c[1] in VERIFY_SEES
])
def test_crafted_archive(action: str, member: str, content: bytes | dict | None, expect: str, archive: Path,
                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = _archive_json(archive, **content) if isinstance(content, dict) else content
    (tmp_path / "share").mkdir()
    bad = repack(archive, tmp_path / "share" / "c.tar.gz", lambda n, d: new if n.startswith(f"c/{member}") else d)
    ds = tmp_path / "ds"
    where = bad.as_uri().removesuffix(".tar.gz") if action == "fetch" else str(bad)
    assert main(["dataset", "--datasets", str(ds), action, where]) == 2
    line = one_line_error(capsys)
    assert "c.tar.gz: " in line and expect in line, line
    assert not ds.exists() and not (tmp_path / "evil").exists()


# ----- fetch, query, pack, publish: names that are not there, paths of the wrong kind ------------------------------
@pytest.mark.parametrize(("url", "expect"), [
    ("{tmp}/nothing", "no such archive (give URL/NAME of an archive"),
    ("file://{tmp}/nothing", "no such archive"),
    ("file://", "no such archive (that is a directory)"),
    ("sftp://", "give sftp://HOST/PATH/NAME"),
    ("http:///lab/x", "give http://HOST/PATH/NAME"),
    ("http://[::1/lab/x", "not a valid URL (Invalid IPv6 URL)"),
    ("http://127.0.0.1:99999/lab/x", "not a valid URL (Port out of range"),
])
def test_fetch_of_what_is_not_there(url: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before anything connects (a URL without a host is checked before the backend's package, too)."""
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), "fetch", url.format(tmp=tmp_path)]) == 2
    assert expect in one_line_error(capsys)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("where", ["missing", "empty", "file"])
def test_query_without_campaigns_is_bad_input(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    if where == "empty":
        ds.mkdir()
    elif where == "file":
        ds.write_text("")
    assert main(["dataset", "--datasets", str(ds), "query", "SELECT 1"]) == 2
    assert f"no campaign in {ds}/" in one_line_error(capsys)


def test_query_over_a_damaged_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_campaign(tmp_path / "ds")
    bad = _parquet(root, "metrics")
    bad.write_bytes(b"PAR1")
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), "query", "SELECT count(*) FROM metrics"]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"runner: {bad}: damaged metrics data: "), line


def test_query_of_campaigns_without_data_or_sql(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A campaign that has no finished trial yet (no Parquet files), and an empty query, are bad input."""
    ds = tmp_path / "ds"
    (ds / "c").mkdir(parents=True)
    (ds / "c" / "dataset.json").write_text(json.dumps(META))
    before = tree(ds / "c")
    assert main(["dataset", "--datasets", str(ds), "query", "SELECT 1"]) == 2
    assert f"no metrics files in any campaign under {ds}/" in one_line_error(capsys)
    make_campaign(ds, "d")
    for sql in ("", "  \n"):
        assert main(["dataset", "--datasets", str(ds), "query", sql]) == 2
        assert "empty query; give SQL over the views `metrics` and `trials`" in one_line_error(capsys)
    assert main(["dataset", "--datasets", str(ds), "query", "SET threads = 1"]) == 2  # a query only reads (SELECT)
    assert "query refused: a SET statement" in one_line_error(capsys)
    assert tree(ds / "c") == before


# ----- archives that are not archives, and datasets directories that are not directories ---------------------
NOT_ARCHIVES = [  # (id, make(good archive bytes) -> bytes, what the line says after the archive's name)
    ("empty", lambda good: b"", "refused: the archive is truncated or damaged (empty file)"),
    ("text", lambda good: b"hello\n", "refused: the archive is truncated or damaged (not a gzip file)"),
    ("truncated", lambda good: good[: len(good) // 2], "refused: the archive is truncated or damaged ("),
    ("no_members", lambda good: _tar_gz({}), "refused: expected one campaign directory, found 0"),
    ("two_campaigns", lambda good: _tar_gz({"a/x": b"1", "b/y": b"2"}), "refused: expected one campaign directory, found 2"),
    ("no_manifest", lambda good: _tar_gz({"c/dataset.json": b"{}"}), "refused: no MANIFEST.sha256 (not a runner dataset archive"),
]


def _tar_gz(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("action", ["verify", "import", "fetch"])
@pytest.mark.parametrize(("make", "expect"), [pytest.param(*c[1:], id=c[0]) for c in NOT_ARCHIVES])
def test_archive_that_is_not_one(action: str, make, expect: str, archive: Path, tmp_path: Path,  # noqa: ANN001
                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.tar.gz"
    bad.write_bytes(make(archive.read_bytes()))
    ds = tmp_path / "ds"
    before = tree(tmp_path)
    assert main(["dataset", "--datasets", str(ds), action, bad.as_uri() if action == "fetch" else str(bad)]) == 2
    line = one_line_error(capsys)
    assert line.startswith("runner: c.tar.gz: ") and expect in line, line
    assert tree(tmp_path) == before and not ds.exists()


def test_fetch_refuses_a_checksum_that_does_not_match(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The archive is good but is not the one published (its NAME.tar.gz.sha256 says otherwise), or the checksum
    file is not one: bad input, refused before anything is imported."""
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    (share_dir / "c.tar.gz").write_bytes(archive.read_bytes())
    ds = tmp_path / "ds"
    for sums, expect in (("0" * 64 + "  c.tar.gz\n", "c.tar.gz: refused: checksum mismatch: the archive's SHA-256 is "),
                         ("<html>not found</html>\n", "c.tar.gz.sha256: refused: not a SHA-256 checksum line; nothing imported"),
                         ("", "c.tar.gz.sha256: refused: not a SHA-256 checksum line")):
        (share_dir / "c.tar.gz.sha256").write_text(sums)
        assert main(["dataset", "--datasets", str(ds), "fetch", share_dir.as_uri() + "/c"]) == 2
        assert expect in one_line_error(capsys)
        assert not ds.exists()


@pytest.mark.parametrize("action", ["import", "fetch"])
def test_import_into_datasets_that_is_not_a_directory(action: str, archive: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Used to end in a NotADirectoryError traceback from the staging directory."""
    (tmp_path / "afile").write_text("")
    where = archive.as_uri().removesuffix(".tar.gz") if action == "fetch" else str(archive)
    for ds, expect in ((tmp_path / "afile", "afile: not a directory; give the datasets directory (--datasets"),
                       (tmp_path / "afile" / "ds", "afile/ds: cannot make the datasets directory there: Not a directory")):
        assert main(["dataset", "--datasets", str(ds), action, where]) == 2
        assert expect in one_line_error(capsys)
    assert (tmp_path / "afile").read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_import_into_a_campaign_being_run_fails_but_is_not_bad_input(archive: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The archive and the datasets are good; the campaign's lock is held: exit 1, the campaign left as it was."""
    root = make_campaign(tmp_path / "ds")
    before = tree(root)
    with CampaignStore(root):
        assert main(["dataset", "--datasets", str(tmp_path / "ds"), "import", str(archive)]) == 1
        assert "campaign 'c' is already being run" in one_line_error(capsys)
        assert {k: v for k, v in tree(root).items() if k != "lock"} == {k: v for k, v in before.items() if k != "lock"}


def test_pack_output_of_the_wrong_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    make_campaign(tmp_path / "ds")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    before = tree(tmp_path)
    for out, expect in ((tmp_path / "adir", "adir: is a directory; give the archive's file name"),
                        (tmp_path / "afile" / "c.tar.gz", "c.tar.gz: cannot write the archive: ")):
        assert main(["dataset", "--datasets", str(tmp_path / "ds"), "pack", "c", "-o", str(out)]) == 2
        assert expect in one_line_error(capsys)
    assert tree(tmp_path) == before
    home = tmp_path / "home"
    home.mkdir()
    (home / "anonymize.key").write_bytes(b"\xffnot hex\n")
    monkeypatch.setenv("RUNNER_HOME", str(home))
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), "pack", "c", "--anonymize", "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert "anonymize.key: cannot read the anonymization key: not a hexadecimal key" in one_line_error(capsys)
    assert not (tmp_path / "x.tar.gz").exists()


def test_publish_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_campaign(tmp_path / "ds")
    (tmp_path / "afile").write_text("")
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), "publish", "c", str(tmp_path / "afile")]) == 2
    assert "afile: cannot publish: " in one_line_error(capsys)
    assert (tmp_path / "afile").read_text() == ""


# ----- cleanup, schedule add, launch ----------------------------------------------------------------------------
@pytest.mark.parametrize("campaign", ["..", "", "a/b", "../ds", "-x", ".hidden"])
def test_cleanup_takes_a_name_not_a_path(campaign: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`..` used to name the directory above the datasets, and cleanup took its lock: wrote a `lock` file there."""
    (tmp_path / "ds").mkdir()
    with pytest.raises(SystemExit) as info:
        main(["cleanup", f"--datasets={tmp_path / 'ds'}", "--dry-run", "--", campaign])
    assert info.value.code == 2
    assert "argument campaign: " in capsys.readouterr().err
    assert tree(tmp_path) == {}


@pytest.mark.parametrize(("option", "make", "expect"), [
    ("--datasets", lambda p: p.write_text(""), "not a directory; give the directory the instances' datasets go to"),
    ("--inventory", lambda p: p.write_bytes(b"all:\n  hosts: {\x00: {}}\n"), "a binary file, not an inventory file"),
    ("--inventory", lambda p: p.write_bytes(b"all:\n  hosts: {caf\xe9: {}}\n"), "not UTF-8 text"),
])
def test_schedule_add_checks_its_paths_now(option: str, make, expect: str, home: Path, tmp_path: Path,  # noqa: ANN001
                                           capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path / "given")
    assert main(["schedule", "add", "n", str(PROJECT / "matrix.yml"), "--cron", "0 2 * * *", "--no-systemd",
                 option, str(tmp_path / "given")]) == 2
    assert expect in one_line_error(capsys)
    assert not home.exists()


def test_launch_into_datasets_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory, hold = local_inventory(tmp_path)  # this machine, its hold file in tmp_path
    matrix = tmp_path / "m.yml"
    matrix.write_text(f"campaign: c\nhosts: {{group: local, inventory: {inventory}}}\n"
                      "workload: {name: command, params: {run: 'echo {}'}}\naxes: {n: [1]}\n")
    (tmp_path / "ds").write_text("")
    assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds"), "--quiet"]) == 2
    assert "ds/c: cannot make the campaign's dataset there: Not a directory" in one_line_error(capsys)
    assert (tmp_path / "ds").read_text() == "" and not hold.exists()


def test_launch_with_a_scheduler_address_without_a_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--scheduler nonsense` used to pass the check: the launch wrote the dataset, waited on holds, then exited 1."""
    inventory, hold = local_inventory(tmp_path)
    matrix = tmp_path / "m.yml"
    matrix.write_text(f"campaign: c\nhosts: {{group: local, inventory: {inventory}}}\n"
                      "workload: {name: command, params: {run: 'echo {}'}}\naxes: {n: [1]}\n")
    for address, expect in (("nonsense", "--scheduler 'nonsense' is not a scheduler address; allowed: tcp://HOST:PORT"),
                            ("tcp://127.0.0.1:99999", "is not a scheduler address"),
                            ("tcp://127.0.0.1:", "is not a scheduler address"),
                            ("nosuch://x", "unknown protocol 'nosuch'; known: inproc, ")):
        assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds"), "--scheduler", address, "--quiet"]) == 2
        assert expect in one_line_error(capsys)
        assert not (tmp_path / "ds").exists() and not hold.exists()


def test_report_of_a_campaign_without_total_rows_makes_no_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_campaign(tmp_path / "ds", thread=0)
    assert main(["report", "c", "--datasets", str(tmp_path / "ds"), "--out", str(tmp_path / "rep")]) == 2  # wrong shape
    assert one_line_error(capsys) == f"runner: {root}: the metrics table has no total rows (thread and vm null) to report"
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("option", ["--hosts", "--cpus"])
@pytest.mark.parametrize(("value", "expect"), [
    ("99999999999999999999", "99999999999999999999 is out of range; allowed: an integer from 1 to "),
    ("0", "0 is out of range; allowed: an integer from 1 to "),
    ("1e3", "'1e3' is not an integer; allowed: an integer from 1 to "),
])
def test_plan_counts_have_bounds(option: str, value: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", str(PROJECT / "matrix.yml"), option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {expect}{ {'--hosts': 100000, '--cpus': 65536}[option]}" in err and "Traceback" not in err


# ----- inventories: hosts, cleanup (and launch, plan through the matrix's inventory) ---------------------------
def _inventory_dir(path: Path, bad: bytes) -> None:
    path.mkdir()
    (path / "good.ini").write_text("[local]\nlocalhost ansible_connection=local\n")
    (path / "more").write_bytes(bad)
    (path / "README.md").write_bytes(b"\x00 skipped by Ansible, so by the runner too")  # *.md is not an inventory source
    (path / "host_vars").mkdir()


def _inventory_with_vars(path: Path, rel: str, bad: bytes) -> None:
    """An inventory directory whose host_vars/ or group_vars/ file `rel` (one Ansible reads) holds `bad`."""
    path.mkdir()
    (path / "hosts.ini").write_text("[local]\nlocalhost ansible_connection=local\n")
    (path / rel).parent.mkdir(parents=True, exist_ok=True)
    (path / rel).write_bytes(bad)


INVENTORY_CORPUS = [  # (id, make(path), what the one line says after the runner's prefix)
    ("binary", lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00"), "{p}: a binary file, not an inventory file"),
    ("latin1_ini", lambda p: p.write_bytes(b"[local]\ncaf\xe9 ansible_host=127.0.0.1\n"), "{p}: line 2: not UTF-8 text (byte 0xe9)"),
    ("latin1_yaml", lambda p: p.with_suffix(".yml").write_bytes(b"all:\n  hosts: {caf\xe9: {}}\n"), "{p}.yml: line 2: not UTF-8 text"),
    ("dir_with_binary", lambda p: _inventory_dir(p, b"\x00\x01\xff"), "{p}/more: a binary file, not an inventory file"),
    ("dir_with_latin1", lambda p: _inventory_dir(p, b"[g]\nh\xff\n"), "{p}/more: line 2: not UTF-8 text (byte 0xff)"),
    ("dir_with_bad_yaml", lambda p: _inventory_dir(p, b"") or (p / "more.yml").write_text("all: [\n"), "{p}/more.yml: not valid YAML"),
    ("unparsable_ini", lambda p: p.write_text("[local\nfoo = = bar\n"),
     "{p}: Ansible cannot parse it as an inventory (Failed to parse inventory: "),
    ("dir_with_unparsable", lambda p: _inventory_dir(p, b"[g\nx = = y\n"), "{p}/more: Ansible cannot parse it as an inventory ("),
    ("empty_dir", lambda p: p.mkdir(), "{p}: no inventory files in this directory; allowed: "),
    ("no_hosts", lambda p: p.with_suffix(".yml").write_text("just: [a, b]\n"),
     "{p}.yml: no hosts (Skipping 'just' as this is not a valid group definition)"),
    # files of host_vars/ and group_vars/: Ansible escaped their bytes and ended in a traceback (exit 1)
    ("host_vars_binary", lambda p: _inventory_with_vars(p, "host_vars/localhost.yml", b"\x7fELF\x02\x01\x00"),
     "{p}/host_vars/localhost.yml: a binary file, not a host_vars file"),
    ("group_vars_latin1", lambda p: _inventory_with_vars(p, "group_vars/all.yml", b"ntp: caf\xe9\n"),
     "{p}/group_vars/all.yml: line 1: not UTF-8 text (byte 0xe9); save the group_vars file as UTF-8"),
    ("group_vars_dir_latin1", lambda p: _inventory_with_vars(p, "group_vars/local/ntp", b"a: 1\nb: \xff\n"),
     "{p}/group_vars/local/ntp: line 2: not UTF-8 text (byte 0xff)"),
    ("host_vars_bad_yaml", lambda p: _inventory_with_vars(p, "host_vars/localhost", b"a: [\n"),
     "{p}/host_vars/localhost: not valid YAML: "),
]


@pytest.mark.parametrize("command", ["hosts", "hosts-release", "cleanup", "provision"])
@pytest.mark.parametrize(("make", "expect"), [pytest.param(*c[1:], id=c[0]) for c in INVENTORY_CORPUS])
def test_bad_inventory(command: str, make, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    """Binary, non-UTF-8 or unparsable inventories (files, or files in an inventory directory) used to give lines
    of Ansible warnings, garbled host names and a paramiko traceback; now one line naming the file, exit 2."""
    given = tmp_path / "inv" / "given"
    given.parent.mkdir()
    make(given)
    inventory = next(p for p in given.parent.iterdir())
    (tmp_path / "ds").mkdir()
    argv = {"hosts": ["hosts"], "hosts-release": ["hosts", "release", "localhost", "--force"],
            "cleanup": ["cleanup", "c", "--dry-run", "--datasets", str(tmp_path / "ds")],
            "provision": ["provision", "--datasets", str(tmp_path / "out")]}[command]
    before = tree(tmp_path)
    assert main([*argv, "--inventory", str(inventory)]) == 2
    line = one_line_error(capsys)
    assert line.startswith("runner: " + expect.format(p=given)), line
    assert tree(tmp_path) == before


@pytest.mark.parametrize(("data", "expect"), [
    (b"governor: caf\xe9\n", "line 1: not UTF-8 text (byte 0xe9); save the tuning file as UTF-8"),
    (b"\x00\x01", "a binary file, not a tuning file"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply to be a file of tuning knobs"),
    (b"governor: [\n", "cannot read tuning knobs: "),
])
def test_provision_with_a_bad_tune_file(data: bytes, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A latin-1 --tune file used to end in a UnicodeDecodeError traceback; refused before Ansible runs."""
    inventory, _ = local_inventory(tmp_path)
    tune = tmp_path / "tune.yml"
    tune.write_bytes(data)
    before = tree(tmp_path)
    assert main(["provision", "--inventory", str(inventory), "--tune", str(tune), "--datasets", str(tmp_path / "out")]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"runner: {tune}: ") and expect in line, line
    assert tree(tmp_path) == before


def test_fit_help_shows_percent_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "95% intervals" in out and "%%" not in out
