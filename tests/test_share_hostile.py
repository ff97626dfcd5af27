"""Shared datasets as untrusted input (issue 20): pack and publish never follow a link out of the dataset;
import and fetch bound what an archive may cost before they write, give imported files the modes launched ones
get and check the campaign of an imported dataset.json as a name; a query only reads, and prints a bounded
number of rows."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import BadDatasetError
from runner.records import share
from tests.test_cli_hostile import make_campaign, repack, tree


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    ds = tmp_path / "made"
    make_campaign(ds)
    return share.pack("c", tmp_path / "c.tar.gz", datasets=ds)


# ----- pack and publish: links ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["pack", "publish"])
def test_pack_never_follows_a_link_out_of_the_dataset(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    root = make_campaign(ds)
    secret = tmp_path / "secret.txt"
    secret.write_text("the lab's password\n")
    (root / "hosts").mkdir(exist_ok=True)
    (root / "hosts" / "notes.json").symlink_to(secret)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["pack", "c", "-o", str(out / "c.tar.gz")] if command == "pack" else ["publish", "c", str(out)]
    assert main(["dataset", "--datasets", str(ds), *argv]) == 2
    line = one_line_error(capsys)
    assert "notes.json: refused: a symbolic link" in line and "nothing packed" in line
    assert list(out.iterdir()) == []


def test_pack_refuses_a_campaign_that_is_not_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_campaign(tmp_path / "ds")
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "campaign": "../../escaped"}))
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "--datasets", str(tmp_path / "ds"), "pack", "c"]) == 2
    assert "is not a campaign name" in one_line_error(capsys)
    assert not list(tmp_path.parent.parent.glob("escaped*")) and not list(tmp_path.glob("*.tar.gz"))


# ----- import: the campaign of dataset.json, modes -------------------------------------------------------
@pytest.mark.parametrize("campaign", ["../../evil", "/tmp/evil", "other"])
def test_import_checks_the_campaign_of_dataset_json(campaign: str, archive: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def edit(name: str, data: bytes) -> bytes:
        return json.dumps({**json.loads(data), "campaign": campaign}).encode() if name == "c/dataset.json" else data

    crafted = repack(archive, tmp_path / "crafted.tar.gz", edit)
    ds = tmp_path / "ds"
    assert main(["dataset", "--datasets", str(ds), "import", str(crafted)]) == 2
    assert "refused: dataset.json: campaign" in one_line_error(capsys)
    assert tree(ds) == {}


def test_imported_files_get_the_modes_of_launched_ones(tmp_path: Path) -> None:
    made = tmp_path / "made"
    make_campaign(made)
    archive = share.pack("c", tmp_path / "c.tar.gz", datasets=made)
    done = share.import_archive(archive, tmp_path / "ds")

    def modes(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *sorted(root.rglob("*"))]
                if p.relative_to(root).parts[:1] != ("lock",) and p.name != "provenance.json"}

    got, want = modes(done.dataset), modes(made / "c")
    assert got == {k: v for k, v in want.items() if k in got}, (got, want)
    assert stat.S_IMODE(done.dataset.stat().st_mode) == stat.S_IMODE((made / "c").stat().st_mode)


# ----- import and fetch: what an archive may cost --------------------------------------------------------
def _with_member(src: Path, dst: Path, info: tarfile.TarInfo, data: bytes | None = None) -> Path:
    with tarfile.open(src, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(dst, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for m, content in members:
            tar.addfile(m, io.BytesIO(content))
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


@pytest.mark.parametrize("command", ["import", "fetch"])
def test_a_compression_bomb_is_refused_before_anything_is_written(command: str, archive: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    big = share.Limits().ratio_floor + (1 << 20)
    info = tarfile.TarInfo("c/zeros.bin")
    info.size = big
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    bomb = _with_member(archive, share_dir / "c.tar.gz", info, bytes(big))
    assert bomb.stat().st_size * share.Limits().max_ratio < big
    ds = tmp_path / "ds"
    source = str(bomb) if command == "import" else str(share_dir / "c")
    assert main(["dataset", "--datasets", str(ds), command, source]) == 2
    assert "a compression bomb?" in one_line_error(capsys)
    assert tree(ds) == {}


@pytest.mark.parametrize("command", ["import", "fetch"])
def test_an_archive_larger_than_allowed_is_refused(command: str, archive: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(share.MAX_BYTES_ENV, "1000")
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    (share_dir / "c.tar.gz").write_bytes(archive.read_bytes())
    ds = tmp_path / "ds"
    source = str(share_dir / "c.tar.gz") if command == "import" else str(share_dir / "c")
    assert main(["dataset", "--datasets", str(ds), command, source]) == 2
    line = one_line_error(capsys)
    assert "more than 1000 bytes" in line and share.MAX_BYTES_ENV in line
    assert tree(ds) == {}
    monkeypatch.setenv(share.MAX_BYTES_ENV, "lots")
    assert main(["dataset", "--datasets", str(ds), command, source]) == 2
    assert f"{share.MAX_BYTES_ENV}='lots': not a positive whole number of bytes" in one_line_error(capsys)


def test_too_many_members_and_sparse_members_are_refused(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(BadDatasetError, match="more than 3 files"):
        share.verify(archive, limits=share.Limits(max_members=3))
    sparse = tarfile.TarInfo("c/sparse.bin")
    sparse.type = tarfile.GNUTYPE_SPARSE
    sparse.size = 0
    crafted = _with_member(archive, tmp_path / "sparse.tar.gz", sparse, b"")
    with pytest.raises(BadDatasetError, match="is a sparse file"):
        share.import_archive(crafted, tmp_path / "ds")
    assert tree(tmp_path / "ds") == {}


# ----- query: read-only, bounded ---------------------------------------------------------------------------
@pytest.mark.parametrize("sql", [
    "COPY metrics TO '{out}'",
    "CREATE TABLE t AS SELECT * FROM metrics",
    "ATTACH '{out}' AS x",
    "SET enable_external_access = true",
    "SELECT 1; COPY metrics TO '{out}'",
    "INSTALL httpfs",
])
def test_query_refuses_statements_that_are_not_select(sql: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    make_campaign(ds)
    before = tree(ds)
    out = ds / "c" / "metrics" / "written.parquet"
    assert main(["dataset", "--datasets", str(ds), "query", sql.format(out=out)]) == 2
    assert "query refused" in one_line_error(capsys)
    assert tree(ds) == before and not out.exists()


@pytest.mark.parametrize("sql", ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('{dataset}')",
                                 "SELECT * FROM glob('/*')"])
def test_query_reads_nothing_but_the_datasets_parquet(sql: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    make_campaign(ds)
    assert main(["dataset", "--datasets", str(ds), "query", sql.format(dataset=ds / "c" / "dataset.json")]) == 2
    assert "query failed" in one_line_error(capsys)


def test_query_prints_a_bounded_number_of_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    make_campaign(ds)
    sql = "SELECT i FROM range(2500) t(i) ORDER BY i"
    assert main(["dataset", "--datasets", str(ds), "query", sql]) == 0
    out = capsys.readouterr().out
    assert f"{2500 - share.DEFAULT_LIMIT} more rows not shown (--limit {share.DEFAULT_LIMIT})" in out
    shown = [line.strip() for line in out.splitlines()]
    assert str(share.DEFAULT_LIMIT - 1) in shown and str(share.DEFAULT_LIMIT) not in shown
    assert main(["dataset", "--datasets", str(ds), "query", sql, "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "2497 more rows not shown (--limit 3)" in out
    result = share.run_query(sql, ds, limit=3)
    assert [r[0] for r in result.rows] == [0, 1, 2] and result.left_out == 2497
    assert share.query("SELECT count(*) FROM metrics", ds)[1][0][0] > 0  # the views still read the dataset
    assert main(["dataset", "--datasets", str(ds), "query", sql, "--limit", "-1"]) == 2
    assert "--limit -1" in one_line_error(capsys)


# ----- the data card reads the matrix as the matrix loader does ------------------------------------------------
@pytest.mark.parametrize("description", ["no", "off", "yes"])
def test_data_card_keeps_a_description_that_yaml_1_1_reads_as_a_boolean(description: str, tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "ds")
    (root / "matrix.yml").write_text(f"campaign: c\ndescription: {description}\n")
    archive = share.pack("c", tmp_path / "c.tar.gz", datasets=tmp_path / "ds")
    with tarfile.open(archive) as tar:
        card = tar.extractfile("c/DATA-CARD.md").read().decode().splitlines()
    assert card[2] == description
