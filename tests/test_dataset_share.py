"""Sharing datasets: pack / verify / import round trip on a dataset made by the real runner, tampering and
truncation refused, anonymization, merging and keeping incomparable results apart, DuckDB, fsspec."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runner.cli import dataset as dataset_cli
from runner.errors import DatasetError, UsageError
from runner.records import share
from runner.records.schema import DICTIONARY, SCHEMA_VERSION
from runner.records.store import read_campaign

pytestmark = pytest.mark.integration

SECRET = "bench-numa80.lab.example"
PROJECT = Path(__file__).resolve().parents[1]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runner")
    dataset_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """datasets/ with campaign `shared`, measured by the real runner on a host named SECRET."""
    tmp = tmp_path_factory.mktemp("made")
    (tmp / "inventory").mkdir()
    (tmp / "inventory" / "hosts.yml").write_text(f"all:\n  children:\n    lab:\n      hosts:\n        {SECRET}:\n          ansible_connection: local\n")
    (tmp / "m.yml").write_text(
        "campaign: shared\ndescription: a tiny shared campaign\nhosts: lab\n"
        "workload: {name: command, params: {run: \"echo '{\\\"v\\\": 1}'\", metrics: json}}\n"
        "axes: {n: [1, 2, 3]}\nrepetitions: 2\ntimeout: 30\n"
    )
    # In a child process: a Dask LocalCluster's warnings (e.g. a busy dashboard port) stay out of pytest's.
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "launch", str(tmp / "m.yml"), "--datasets", str(tmp / "ds"), "--quiet"], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp / "ds"


def repack(src: Path, dst: Path, edit: Callable[[str, bytes], bytes | None], *, fix_manifest: bool = False) -> Path:
    """Copy an archive member by member through `edit` (None drops a member); optionally re-sign the manifest."""
    members: dict[str, bytes] = {}
    with tarfile.open(src, "r:gz") as tar:
        for info in tar:
            data = edit(info.name, tar.extractfile(info).read())
            if data is not None:
                members[info.name] = data
    if fix_manifest:
        top = next(iter(members)).split("/")[0]
        lines = [f"{hashlib.sha256(d).hexdigest()}  {n[len(top) + 1:]}\n" for n, d in sorted(members.items()) if not n.endswith(share.MANIFEST)]
        members[f"{top}/{share.MANIFEST}"] = "".join(lines).encode()
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def test_pack_verify_import_query(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "shared.tar.gz"
    assert cli(["dataset", "--datasets", str(made), "pack", "shared", "-o", str(archive)]) == 0
    v = share.verify(archive)
    assert (v.campaign, v.schema_version, v.anonymized) == ("shared", SCHEMA_VERSION, False)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        card = tar.extractfile("shared/DATA-CARD.md").read().decode()
        schema = json.loads(tar.extractfile("shared/schema.json").read())
    assert {"shared/MANIFEST.sha256", "shared/archive.json", "shared/matrix.yml", "shared/provenance.json", f"shared/hosts/{SECRET}.json"} <= names
    assert "shared/lock" not in names
    assert "a tiny shared campaign" in card and "## How to cite" in card and "`v` in no unit" in card
    cols = {c["name"]: c for c in schema["tables"]["metrics"]}
    assert cols["value"]["meaning"] == DICTIONARY["value"] and DICTIONARY["value"].startswith("measured value, a double") and cols["n"]["type"] == "int" and "workload" in cols
    assert schema["metrics"]["v"]["rows"] == 6

    dest = tmp_path / "collab"
    assert cli(["dataset", "--datasets", str(dest), "import", str(archive)]) == 0
    assert "6 new trials, 0 already there" in capsys.readouterr().out
    m1, t1, _ = read_campaign("shared", made)
    m2, t2, _ = read_campaign("shared", dest)
    assert sorted(t1["trial_id"]) == sorted(t2["trial_id"]) and m2["value"].sum() == m1["value"].sum()
    again = share.import_archive(archive, dest)
    assert (again.new_trials, again.duplicate_trials, again.kept_apart) == (0, 6, None)
    assert len(read_campaign("shared", dest)[1]) == 6

    columns, rows = share.query("SELECT dataset, workload, n, count(*) AS c FROM metrics GROUP BY ALL ORDER BY n", dest)
    assert columns == ["dataset", "workload", "n", "c"] and rows == [("shared", "command", n, 2) for n in (1, 2, 3)]
    assert share.query("SELECT count(*) FROM trials WHERE status = 'ok'", dest)[1] == [(6,)]
    assert cli(["dataset", "--datasets", str(dest), "query", "SELECT count(*) AS n FROM metrics"]) == 0
    with pytest.raises(Exception, match="query failed"):
        share.query("SELECT nope FROM metrics", dest)


def test_tampered_and_truncated_archives_are_refused(made: Path, tmp_path: Path) -> None:
    archive = share.pack("shared", tmp_path / "a.tar.gz", datasets=made)

    def flip(name: str, data: bytes) -> bytes:
        return data[:-20] + bytes([data[-20] ^ 1]) + data[-19:] if "/metrics/" in name and name.endswith(".parquet") else data

    cases = {"checksum mismatch for shared/metrics/workload=command/": repack(archive, tmp_path / "t1.tar.gz", flip)}
    # a file added after packing
    added = tmp_path / "t2.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(added, "w:gz") as dst:
        for info in src:
            dst.addfile(info, src.extractfile(info))
        extra = tarfile.TarInfo("shared/extra.txt")
        extra.size = 2
        dst.addfile(extra, io.BytesIO(b"hi"))
    cases["shared/extra.txt is not listed"] = added
    cases["is listed in MANIFEST.sha256 but missing"] = repack(archive, tmp_path / "t3.tar.gz", lambda n, d: None if n.endswith("provenance.json") else d)
    data = archive.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    cases["truncated or damaged"] = tmp_path / "cut.tar.gz"
    for expected, path in cases.items():
        with pytest.raises(DatasetError, match=expected.replace("[", r"\[")) as err:
            share.verify(path)
        assert "\n" not in str(err.value)
        with pytest.raises(DatasetError):
            share.import_archive(path, tmp_path / "never")
    assert not (tmp_path / "never" / "shared").exists()

    newer = repack(archive, tmp_path / "new.tar.gz", lambda n, d: d.replace(f'"schema_version": {SCHEMA_VERSION}'.encode(), b'"schema_version": 99') if n.endswith("archive.json") else d, fix_manifest=True)
    with pytest.raises(DatasetError, match="schema version 99 is not readable .*upgrade the runner"):
        share.verify(newer)


def test_anonymized_archive_has_no_real_host_name(made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    a = share.pack("shared", tmp_path / "anon.tar.gz", datasets=made, anonymize=True)
    b = share.pack("shared", tmp_path / "anon2.tar.gz", datasets=made, anonymize=True)
    assert share.verify(a).anonymized
    pseudonym = share.Pseudonyms(share.anonymize_key(), set()).pseudonym(SECRET)
    texts = {}
    with tarfile.open(a) as tar:
        for info in tar:
            if info.isfile():
                data = tar.extractfile(info).read()
                texts[info.name] = str(pq.read_table(io.BytesIO(data)).to_pylist()) if info.name.endswith(".parquet") else data.decode()
                assert SECRET not in info.name and b"lab.example" not in data
    for name, text in texts.items():
        assert SECRET not in text and "lab.example" not in text, name
    assert f"shared/hosts/{pseudonym}.json" in texts and pseudonym in texts["shared/trials/" + next(n.split("/trials/")[1] for n in texts if "/trials/" in n)]
    prov = json.loads(texts["shared/provenance.json"])
    assert prov["controller"].startswith("host-")
    with tarfile.open(b) as tar:  # stable: the same pseudonyms in every archive
        assert f"shared/hosts/{pseudonym}.json" in tar.getnames()


def test_pseudonyms_cover_addresses() -> None:
    p = share.Pseudonyms(b"k" * 32, {"numa80"})
    out = p.text("ssh root@10.1.2.3 and numa80:22 via fe80::1:2 (numa800 stays, kernel 6.1.0)")
    assert "10.1.2.3" not in out and "fe80::1:2" not in out and "numa80:" not in out
    assert "numa800 stays" in out and "6.1.0" in out and p.pseudonym("10.1.2.3", "addr") in out
    assert p.json({"numa80": ["numa80"], "host": "x"}) == {p.pseudonym("numa80"): [p.pseudonym("numa80")], "host": "x"}


def test_incomparable_results_are_kept_apart(made: Path, tmp_path: Path) -> None:
    archive = share.pack("shared", tmp_path / "s.tar.gz", datasets=made)
    ours = tmp_path / "ours"
    share.import_archive(archive, ours)
    facts = ours / "shared" / "hosts" / f"{SECRET}.json"
    facts.write_text(json.dumps({**json.loads(facts.read_text()), "cpus": 128}))  # our copy: another machine
    done = share.import_archive(archive, ours)
    assert done.kept_apart is not None and "fingerprint" in done.kept_apart
    assert done.dataset.name.startswith("shared--") and done.new_trials == 6
    rows = share.query("SELECT dataset, count(*) FROM trials GROUP BY ALL ORDER BY ALL", ours)[1]
    assert rows == [("shared", 6), (done.dataset.name, 6)]
    assert share.import_archive(archive, ours).duplicate_trials == 6  # the kept-apart copy is not duplicated


def test_publish_and_fetch(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = (tmp_path / "shared-location").as_uri()
    assert cli(["dataset", "--datasets", str(made), "publish", "shared", url]) == 0
    assert (tmp_path / "shared-location" / "shared.tar.gz").exists()
    assert cli(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{url}/shared"]) == 0
    assert "6 new trials" in capsys.readouterr().out
    with pytest.raises(UsageError, match="no such archive"):  # the user named an archive that is not there
        share.fetch(f"{url}/nothing", tmp_path / "mine")


def test_schema_1_datasets_still_read(made: Path, tmp_path: Path) -> None:
    """A dataset written before the guest columns (schema version 1) reads with them null."""
    import json
    import shutil

    import pyarrow.parquet as pq

    from runner.records.schema import GUEST_FIELDS

    old = tmp_path / "ds" / "shared"
    shutil.copytree(made / "shared", old)
    meta = json.loads((old / "dataset.json").read_text())
    (old / "dataset.json").write_text(json.dumps({**meta, "schema_version": 1}))
    for f in (old / "trials").rglob("*.parquet"):
        table = pq.read_table(f)
        pq.write_table(table.drop_columns([g.name for g in GUEST_FIELDS]), f)
    _, trials, prov = read_campaign("shared", tmp_path / "ds")
    assert prov["schema_version"] == 1 and len(trials) == 6
    assert trials["boot_id"].isna().all() and trials["guest_vcpus"].isna().all()
