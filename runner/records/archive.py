"""One checked archive per campaign: `pack` writes it, `verify` reads it whole.

An archive (`<campaign>.tar.gz`) holds one directory `<campaign>/` with the campaign's dataset as
runner.records.schema lays it out, plus archive.json (format and schema versions, campaign, host fingerprints,
anonymized?), schema.json and DATA-CARD.md (runner.records.datacard) and MANIFEST.sha256 (SHA-256 of every
other file, `sha256sum -c` format). A truncated, tampered, unsafe or too costly archive is refused with one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.parquet as pq

from runner.errors import BadDatasetError, DatasetError, UsageError
from runner.provision.fingerprint import summarize
from runner.records.anonymise import Pseudonyms, anonymize_key, host_names
from runner.records.datacard import data_card, data_dictionary
from runner.records.schema import READABLE_SCHEMAS, SCHEMA_VERSION
from runner.records.store import (
    CAMPAIGN_NAME,
    HOST_FACT_TIMES,
    CampaignStore,
    find_campaign,
    parquet_bytes,
    read_json,
    split_host_file,
)
from runner.util import one_line

ARCHIVE_VERSION = 1  # 1: first release (archive.json, schema.json, DATA-CARD.md, MANIFEST.sha256)
MANIFEST = "MANIFEST.sha256"
GENERATED = ("archive.json", "schema.json", "DATA-CARD.md")


def fingerprint(facts: Mapping[str, Any]) -> dict[str, Any]:
    """What makes results of a host comparable: the fingerprint summary plus the CPU count. Pure."""
    out = {k: v for k, v in summarize(facts).items() if v not in (None, 0)}
    out["cpus"] = facts.get("cpus")
    return out


def _dataset_files(root: Path) -> list[Path]:
    """The files of a campaign that belong in an archive (not the lock, not staging files). A symbolic link
    among them is refused (BadDatasetError naming it): an archive never takes a file from outside the dataset."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts == ("lock",) or any(p.startswith(".") for p in rel.parts):
            continue
        if path.is_symlink():
            raise BadDatasetError(f"{path}: refused: a symbolic link (to {os.readlink(path)}); a dataset holds regular "
                                  "files only and its archive never follows a link; nothing packed")
        if path.is_file():
            files.append(path)
    return files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(campaign: str | Path, out: Path | None = None, *, datasets: Path = Path("datasets"), anonymize: bool = False, key: bytes | None = None) -> Path:
    """Write the campaign's archive; returns its path (default `<campaign>.tar.gz` here)."""
    root = find_campaign(str(campaign), datasets)
    store = CampaignStore(root)
    meta = store.meta()
    name = meta["campaign"]
    out = Path(out or f"{name}.tar.gz")
    if out.is_dir():
        raise UsageError(f"{out}: is a directory; give the archive's file name (default: CAMPAIGN.tar.gz here)")
    if not CAMPAIGN_NAME.fullmatch(str(name)):  # e.g. an imported dataset.json crafted so: never a path
        raise BadDatasetError(f"{root / 'dataset.json'}: campaign {name!r} is not a campaign name "
                              "(letters, digits, . _ - and no leading dot); nothing packed")
    files = _dataset_files(root)  # first: a link out of the dataset is refused before anything is read
    # Everything read below is checked first: a damaged file is refused with one line naming it.
    metrics, trials = store.read_table("metrics"), store.read_table("trials")
    store.matrix_text()
    store.read_provenance()
    for when in ("before", *HOST_FACT_TIMES):
        store.host_facts(when)
    anon = Pseudonyms(key or anonymize_key(), host_names(root)) if anonymize else None
    members: dict[str, bytes | Path] = {}
    for path in files:
        rel = path.relative_to(root).as_posix()
        if anon is None:
            members[rel] = path
        elif path.suffix == ".parquet":
            members[rel] = parquet_bytes(anon.table(pq.read_table(path)))
        elif path.suffix == ".json":
            if rel.startswith("hosts/"):
                host, when = split_host_file(path.name)
                rel = f"hosts/{anon.pseudonym(host)}" + ("" if when == "before" else f".{when}") + ".json"
            members[rel] = (json.dumps(anon.json(read_json(path, "file")), indent=2, sort_keys=True) + "\n").encode()
        else:
            members[rel] = anon.text(_text(path)).encode()
    prov = json.loads(_read(members["provenance.json"])) if "provenance.json" in members else {}
    facts = {split_host_file(k[6:]): json.loads(_read(v)) for k, v in members.items() if k.startswith("hosts/")}
    prints = {host: fingerprint(f) for (host, when), f in facts.items() if when == "before"}
    dictionary = data_dictionary(meta, metrics)
    if anon is not None:
        trials = anon.table(trials)
    members["schema.json"] = (json.dumps(dictionary, indent=2) + "\n").encode()
    members["archive.json"] = (json.dumps({
        "archive_version": ARCHIVE_VERSION, "schema_version": meta["schema_version"], "campaign": name,
        "matrix_sha256": meta["matrix_sha256"], "packed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "anonymized": anonymize, "fingerprints": prints,
    }, indent=2, sort_keys=True) + "\n").encode()
    members["DATA-CARD.md"] = data_card(meta, prov, trials, dictionary, prints, _read(members["matrix.yml"]), anonymize).encode()
    manifest = "".join(f"{_sha256(_bytes(members[rel]))}  {rel}\n" for rel in sorted(members))
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for rel in [*sorted(members), MANIFEST]:
                data = manifest.encode() if rel == MANIFEST else _bytes(members[rel])
                info = tarfile.TarInfo(f"{name}/{rel}")
                info.size, info.mtime, info.mode = len(data), int(datetime.now(UTC).timestamp()), 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        bad_path = isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError))  # the path given: bad input
        raise (UsageError if bad_path else DatasetError)(f"{out}: cannot write the archive: {exc.strerror or exc}") from None
    return out


def _bytes(item: bytes | Path) -> bytes:
    return item if isinstance(item, bytes) else item.read_bytes()


def _read(item: bytes | Path) -> str:
    return _bytes(item).decode()


def _text(path: Path) -> str:
    """A text file of a dataset (to anonymize): UTF-8, else BadDatasetError naming it."""
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BadDatasetError(f"{path}: cannot anonymize: {why}") from None


def _json_member(data: bytes, name: str, where: str) -> dict[str, Any]:
    """A JSON object inside an archive (its checksum matched: a damaged one was packed so, or crafted)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise BadDatasetError(f"{where}: refused: {name} is not a JSON object (a damaged or foreign archive)")
    return doc


@dataclass(frozen=True)
class Verified:
    """A verified archive: its campaign, versions, files and the SHA-256 of its manifest (its identity)."""

    archive: Path
    campaign: str
    schema_version: int
    anonymized: bool
    files: int
    manifest_sha256: str
    fingerprints: Mapping[str, Any] = field(default_factory=dict)
    matrix_sha256: str = ""


@dataclass(frozen=True)
class Limits:
    """What an archive may cost to read, checked from each member's header before its data is read: the
    bytes of all its files, their number, and the ratio of those bytes to the archive's own size (above
    `ratio_floor` bytes; a small archive of text compresses well). Sparse members are always refused."""

    max_bytes: int = 2 << 30
    max_members: int = 100_000
    max_ratio: float = 100.0
    ratio_floor: int = 64 << 20

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, or RUNNER_ARCHIVE_MAX_BYTES (a whole number of bytes) for a larger dataset."""
        value = os.environ.get(MAX_BYTES_ENV, "").strip()
        if not value:
            return cls()
        if not value.isdigit() or int(value) <= 0:
            raise UsageError(f"{MAX_BYTES_ENV}={value!r}: not a positive whole number of bytes")
        return cls(max_bytes=int(value))


MAX_BYTES_ENV = "RUNNER_ARCHIVE_MAX_BYTES"


def _read_members(archive: Path, sink: Callable[[str, bytes], None], limits: Limits | None = None) -> None:
    """Read every member; a missing, truncated, damaged, unsafe or too costly archive (Limits) raises
    BadDatasetError before the member that exceeds a bound is read."""
    where = archive.name
    limits = limits or Limits.from_env()
    total = members = 0
    try:
        packed = archive.stat().st_size
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                path = PurePosixPath(info.name)
                if path.is_absolute() or ".." in path.parts:
                    raise BadDatasetError(f"{where}: refused: member {info.name!r} points outside the archive")
                if info.isdir():
                    continue
                if not info.isfile() or info.issparse():
                    kind = "a sparse file" if info.issparse() else "not a regular file"
                    raise BadDatasetError(f"{where}: refused: member {info.name!r} is {kind}")
                members, total = members + 1, total + info.size
                if members > limits.max_members:
                    raise BadDatasetError(f"{where}: refused: more than {limits.max_members} files; nothing imported")
                if total > limits.max_bytes:
                    raise BadDatasetError(f"{where}: refused: its files hold more than {limits.max_bytes} bytes "
                                          f"(set {MAX_BYTES_ENV} for a larger dataset); nothing imported")
                if total > limits.ratio_floor and total > limits.max_ratio * max(packed, 1):
                    raise BadDatasetError(f"{where}: refused: its files hold over {limits.max_ratio:g} times the archive's "
                                          f"{packed} bytes (a compression bomb?); nothing imported")
                fh = tar.extractfile(info)
                sink(info.name, fh.read() if fh else b"")
    except FileNotFoundError:
        raise BadDatasetError(f"{archive}: no such archive") from None
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise BadDatasetError(f"{where}: refused: the archive is truncated or damaged ({one_line(exc, limit=10_000)})") from None


def verify(archive: Path, *, keep: dict[str, bytes] | None = None, limits: Limits | None = None) -> Verified:
    """Check every checksum, the file list, and the versions. `keep` receives the files (path -> bytes).
    `limits`: what reading it may cost (default: Limits.from_env())."""
    archive = Path(archive)
    where = archive.name
    digests: dict[str, str] = {}
    blobs: dict[str, bytes] = {}

    def sink(name: str, data: bytes) -> None:
        digests[name] = _sha256(data)
        if keep is not None or PurePosixPath(name).name in (MANIFEST, "archive.json") and PurePosixPath(name).parent.parent == PurePosixPath("."):
            blobs[name] = data

    _read_members(archive, sink, limits)
    tops = {PurePosixPath(n).parts[0] for n in digests}
    if len(tops) != 1:
        raise BadDatasetError(f"{where}: refused: expected one campaign directory, found {len(tops)}")
    top = tops.pop()
    manifest_name = f"{top}/{MANIFEST}"
    if manifest_name not in blobs:
        raise BadDatasetError(f"{where}: refused: no {MANIFEST} (not a runner dataset archive, or truncated)")
    listed: dict[str, str] = {}
    for line in blobs[manifest_name].decode(errors="replace").splitlines():
        digest, _, rel = line.partition("  ")
        listed[f"{top}/{rel}"] = digest
    present = set(digests) - {manifest_name}
    for name in sorted(set(listed) - present):
        raise BadDatasetError(f"{where}: refused: {name} is listed in {MANIFEST} but missing (truncated?)")
    for name in sorted(present - set(listed)):
        raise BadDatasetError(f"{where}: refused: {name} is not listed in {MANIFEST} (added after packing)")
    for name in sorted(listed):
        if digests[name] != listed[name]:
            raise BadDatasetError(f"{where}: refused: checksum mismatch for {name} (the file was changed after packing)")
    if f"{top}/archive.json" not in blobs:
        raise BadDatasetError(f"{where}: refused: no archive.json (not a runner dataset archive)")
    info = _json_member(blobs[f"{top}/archive.json"], "archive.json", where)
    if info.get("archive_version") != ARCHIVE_VERSION:
        raise BadDatasetError(f"{where}: archive format {info.get('archive_version')!r} is not readable; this runner reads format {ARCHIVE_VERSION}")
    version = info.get("schema_version")
    if type(version) is not int or version not in READABLE_SCHEMAS:  # not a bool, not a list (unhashable)
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        hint = "upgrade the runner" if newer else "repack it with a runner of that time"
        raise BadDatasetError(f"{where}: dataset schema version {version} is not readable (this runner reads {sorted(READABLE_SCHEMAS)}); {hint}")
    campaign = info.get("campaign")
    if not isinstance(campaign, str) or not CAMPAIGN_NAME.fullmatch(campaign):
        raise BadDatasetError(f"{where}: refused: archive.json: campaign {campaign!r} is not a campaign name "
                              "(letters, digits, . _ - and no leading dot)")
    if keep is not None:
        keep.update({n[len(top) + 1:]: b for n, b in blobs.items() if n != manifest_name})
    return Verified(archive, info["campaign"], version, bool(info.get("anonymized")), len(listed), _sha256(blobs[manifest_name]), info.get("fingerprints", {}), info.get("matrix_sha256", ""))
