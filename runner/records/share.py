"""Datasets that leave the lab: one checked archive per campaign, import and merge, DuckDB queries, publishing.

An archive (`<campaign>.tar.gz`) holds one directory `<campaign>/` with the campaign's dataset as
runner.records.schema lays it out, plus:
    archive.json      archive format version, schema version, campaign, host fingerprints, anonymized?
    schema.json       data dictionary: every column of both tables with type, meaning, unit, direction,
                      and every metric found with its unit and direction
    DATA-CARD.md      for people: what was measured, how, on what, how to read and cite it
    MANIFEST.sha256   SHA-256 of every other file (`sha256sum -c` format)
`verify` reads the whole archive: a truncated or tampered one is refused with one line naming what is
wrong. An archive, a campaign or a datasets directory the user named that is missing, empty, damaged, of an
unreadable version or of the wrong shape is bad input (BadDatasetError, UsageError: exit 2); what fails around
good data (a held lock, a full disk, a server that does not answer) is a DatasetError (exit 1).
`--anonymize` replaces host names and addresses by stable pseudonyms (HMAC-SHA256 with a key kept
in RUNNER_HOME/anonymize.key, so the same host gets the same pseudonym in every archive of this lab and
nobody outside can recompute them) in Parquet columns, JSON files, the matrix and file names.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runner.errors import BadDatasetError, DatasetError, UsageError
from runner.records.schema import DICTIONARY, METRIC_FIELDS, READABLE_SCHEMAS, SCHEMA_VERSION, TRIAL_FIELDS
from runner.records.store import (
    CAMPAIGN_NAME,
    HOST_FACT_TIMES,
    CampaignStore,
    find_campaign,
    parquet_bytes,
    read_json,
    split_host_file,
    write_json_atomic,
)

ARCHIVE_VERSION = 1  # 1: first release (archive.json, schema.json, DATA-CARD.md, MANIFEST.sha256)
MANIFEST = "MANIFEST.sha256"
GENERATED = ("archive.json", "schema.json", "DATA-CARD.md")
UNITS = {"wall_s": "s", "workload_wall_s": "s", "started_at": "UTC time", "ended_at": "UTC time", "value": "given by `unit`"}
DIRECTION = {"value": "given by `higher_is_better`", "wall_s": "lower is better", "workload_wall_s": "lower is better"}
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])")  # checked by ipaddress
CITATION = (
    "Kashyap, Min, Kim. Scalability in the Clouds! A Myth or Reality? APSys 2015.\n"
    "Kashyap, Min, Kim. Opportunistic Spinlocks: Achieving Virtual Machine Scalability in the Clouds. "
    "SIGOPS OSR 50(1), 2016."
)


# ----- fingerprints -----------------------------------------------------------------------------------
def fingerprint(facts: Mapping[str, Any]) -> dict[str, Any]:
    """What makes results of a host comparable: the fingerprint summary plus the CPU count. Pure."""
    from runner.provision.fingerprint import summarize

    out = {k: v for k, v in summarize(facts).items() if v not in (None, 0)}
    out["cpus"] = facts.get("cpus")
    return out


# ----- anonymization ----------------------------------------------------------------------------------
def anonymize_key(home: Path | None = None) -> bytes:
    """This lab's pseudonym key (made once, kept in RUNNER_HOME/anonymize.key, mode 600)."""
    from runner.paths import runner_home

    path = (home or runner_home()) / "anonymize.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    try:
        key = bytes.fromhex(path.read_bytes().decode("ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        key, why = b"", exc.strerror if isinstance(exc, OSError) else "not a hexadecimal key"
    else:
        why = "empty"
    if not key:
        raise UsageError(f"{path}: cannot read the anonymization key: {why}; restore it from a backup, or remove it "
                         "to make a new one (then the same hosts get other pseudonyms than in earlier archives)")
    return key


class Pseudonyms:
    """Replaces known host names and any IP address in strings by stable keyed pseudonyms."""

    def __init__(self, key: bytes, names: set[str]) -> None:
        self.key = key
        self.names = {n for n in names if n}
        alternatives = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        self._names_re = re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-])") if alternatives else None

    def pseudonym(self, real: str, kind: str = "host") -> str:
        return f"{kind}-{hmac.new(self.key, real.encode(), hashlib.sha256).hexdigest()[:10]}"

    def text(self, value: str) -> str:
        if value in self.names:
            return self.pseudonym(value)
        if self._names_re is not None:
            value = self._names_re.sub(lambda m: self.pseudonym(m.group(0)), value)
        value = IPV4.sub(lambda m: self.pseudonym(m.group(0), "addr"), value)
        return IPV6.sub(lambda m: self._v6(m.group(0)), value)

    def _v6(self, text: str) -> str:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return text
        return self.pseudonym(text, "addr")

    def json(self, doc: Any) -> Any:
        """Every string value, and keys that are host names, of a JSON document."""
        if isinstance(doc, dict):
            return {(self.pseudonym(k) if k in self.names else k): self.json(v) for k, v in doc.items()}
        if isinstance(doc, list):
            return [self.json(v) for v in doc]
        return self.text(doc) if isinstance(doc, str) else doc

    def table(self, table: pa.Table) -> pa.Table:
        """Every string column, one transformation per distinct value."""
        for i, fld in enumerate(table.schema):
            if pa.types.is_string(fld.type) or pa.types.is_large_string(fld.type):
                encoded = pc.dictionary_encode(table.column(i)).combine_chunks()
                mapped = pa.array([self.text(v) for v in encoded.dictionary.to_pylist()], pa.string())
                column = pa.DictionaryArray.from_arrays(encoded.indices, mapped).cast(fld.type)
                table = table.set_column(i, fld, column)
        return table


def host_names(root: Path) -> set[str]:
    """Every host name a campaign mentions: its hosts, the `host` column, the controllers."""
    store = CampaignStore(root)
    names: set[str] = set()
    for when in ("before", *HOST_FACT_TIMES):
        for host, facts in store.host_facts(when).items():
            names.add(host)
            names |= {str(facts[k]) for k in ("host", "hostname", "fqdn", "nodename") if facts.get(k)}
    prov = store.read_provenance()
    names |= {str(prov["controller"])} if prov.get("controller") else set()
    names |= {str(launch.get("controller")) for launch in prov.get("launches", []) if launch.get("controller")}
    names |= set(prov.get("dead_hosts") or {})
    names |= set(store.read_table("trials").column("host").to_pylist())
    return names


# ----- packing ----------------------------------------------------------------------------------------
def _dataset_files(root: Path) -> Iterator[Path]:
    """The files of a campaign that belong in an archive (not the lock, not staging files)."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts != ("lock",) and not any(p.startswith(".") for p in rel.parts):
            yield path


def data_dictionary(meta: Mapping[str, Any], metrics: pa.Table) -> dict[str, Any]:
    """schema.json: every column's type, meaning, unit and direction, and the metrics found. Pure."""

    def columns(fields: list[pa.Field]) -> list[dict[str, Any]]:
        out = [
            {
                "name": f.name, "type": str(f.type), "nullable": f.nullable, "meaning": DICTIONARY[f.name],
                "unit": UNITS.get(f.name), "direction": DIRECTION.get(f.name),
            }
            for f in fields
        ]
        out.append({"name": "workload", "type": "string", "nullable": False, "meaning": DICTIONARY["workload"], "unit": None, "direction": None})
        for axis, kind in sorted(meta.get("axis_types", {}).items()):
            out.append({"name": axis, "type": kind, "nullable": True, "meaning": f"matrix axis `{axis}`: the value of this parameter in the trial", "unit": None, "direction": None})
        return out

    found: dict[str, dict[str, Any]] = {}
    if metrics.num_rows:
        grouped = metrics.group_by(["metric", "unit", "higher_is_better"], use_threads=False).aggregate([("value", "count")])
        for row in grouped.to_pylist():
            direction = {True: "higher is better", False: "lower is better"}.get(row["higher_is_better"], "neutral")
            found[row["metric"]] = {"unit": row["unit"], "direction": direction, "rows": row["value_count"]}
    return {"schema_version": meta["schema_version"], "tables": {"metrics": columns(METRIC_FIELDS), "trials": columns(TRIAL_FIELDS)}, "metrics": found}


def data_card(meta: Mapping[str, Any], prov: Mapping[str, Any], trials: pa.Table, dictionary: Mapping[str, Any], prints: Mapping[str, Any], matrix_text: str, anonymized: bool) -> str:
    """DATA-CARD.md. Pure."""
    import yaml

    matrix = yaml.safe_load(matrix_text) or {}
    statuses = trials.column("status").to_pylist() if trials.num_rows else []
    envs = sorted(set(trials.column("env").to_pylist())) if trials.num_rows else []
    accels = sorted({a for a in trials.column("accel").to_pylist() if a}) if trials.num_rows else []
    span = ""
    if trials.num_rows:
        start, end = pc.min(trials.column("started_at")).as_py(), pc.max(trials.column("ended_at")).as_py()
        span = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    lines = [
        f"# Data card: {meta['campaign']}",
        "",
        f"{matrix.get('description') or 'No description was given in the matrix file.'}",
        "",
        "## What was measured",
        f"- workload: `{meta['workload']}`; parameters varied: {', '.join(f'`{a}`' for a in sorted(meta.get('axis_types', {}))) or 'none'}",
        f"- {meta.get('trials_planned')} trials planned, {statuses.count('ok')} attempts ok, "
        f"{len(statuses) - statuses.count('ok')} failed or timed out ({len(statuses)} attempts in all); {span}",
        "- metrics:",
        *[f"  - `{m}` in {d['unit'] or 'no unit'}, {d['direction']} ({d['rows']} rows)" for m, d in sorted(dictionary["metrics"].items())],
        "",
        "## How",
        f"- runner {prov.get('runner_version', '?')} (git {str(prov.get('git_commit') or 'unknown')[:12]}), "
        f"placement `{prov.get('placement', '?')}`, order `{prov.get('order', '?')}`, seed {meta.get('seed')}",
        f"- environments: {', '.join(envs) or 'none'}; accelerators used: {', '.join(accels) or 'none'}",
        f"- repetitions per cell: {matrix.get('repetitions', 3)}; the full matrix is `matrix.yml`, the command lines and launches `provenance.json`",
        "",
        "## On what",
        *[f"- `{h}`: " + ", ".join(f"{k} {v}" for k, v in sorted(fp.items())) for h, fp in sorted(prints.items())],
        "- full host facts: `hosts/<host>.json`" + (" (host names and addresses are pseudonyms)" if anonymized else ""),
        "",
        "## How to read it",
        "- tables `metrics` and `trials` as Parquet with hive partitioning (`workload=...`); every column is "
        "explained in `schema.json`.",
        "- `runner dataset import ARCHIVE` then `runner dataset query \"SELECT ... FROM metrics\"`, or",
        "  `duckdb -c \"SELECT * FROM read_parquet('metrics/**/*.parquet', hive_partitioning=true)\"`",
        "- check the files first: `runner dataset verify ARCHIVE` (or `sha256sum -c MANIFEST.sha256`).",
        "",
        "## How to cite",
        f"Cite the dataset as: {meta['campaign']}, schema version {meta['schema_version']}, created {str(meta.get('created_at', ''))[:10]}, "
        "identified by the SHA-256 of its MANIFEST.sha256 (printed by `runner dataset verify`). The methods it follows:",
        "",
        *[f"- {c}" for c in CITATION.splitlines()],
        "",
    ]
    return "\n".join(lines)


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
    # Everything read below is checked first: a damaged file is refused with one line naming it.
    metrics, trials = store.read_table("metrics"), store.read_table("trials")
    store.matrix_text()
    store.read_provenance()
    for when in ("before", *HOST_FACT_TIMES):
        store.host_facts(when)
    anon = Pseudonyms(key or anonymize_key(), host_names(root)) if anonymize else None
    members: dict[str, bytes | Path] = {}
    for path in _dataset_files(root):
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


# ----- verifying --------------------------------------------------------------------------------------
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


def _read_members(archive: Path, sink: Callable[[str, bytes], None]) -> None:
    """Read every member; a missing, truncated, damaged or unsafe archive raises BadDatasetError."""
    where = archive.name
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                path = PurePosixPath(info.name)
                if path.is_absolute() or ".." in path.parts:
                    raise BadDatasetError(f"{where}: refused: member {info.name!r} points outside the archive")
                if info.isdir():
                    continue
                if not info.isfile():
                    raise BadDatasetError(f"{where}: refused: member {info.name!r} is not a regular file")
                fh = tar.extractfile(info)
                sink(info.name, fh.read() if fh else b"")
    except FileNotFoundError:
        raise BadDatasetError(f"{archive}: no such archive") from None
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise BadDatasetError(f"{where}: refused: the archive is truncated or damaged ({' '.join(str(exc).split()) or type(exc).__name__})") from None


def verify(archive: Path, *, keep: dict[str, bytes] | None = None) -> Verified:
    """Check every checksum, the file list, and the versions. `keep` receives the files (path -> bytes)."""
    archive = Path(archive)
    where = archive.name
    digests: dict[str, str] = {}
    blobs: dict[str, bytes] = {}

    def sink(name: str, data: bytes) -> None:
        digests[name] = _sha256(data)
        if keep is not None or PurePosixPath(name).name in (MANIFEST, "archive.json") and PurePosixPath(name).parent.parent == PurePosixPath("."):
            blobs[name] = data

    _read_members(archive, sink)
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


# ----- importing and merging --------------------------------------------------------------------------
@dataclass(frozen=True)
class Imported:
    """What an import did: into which dataset, how many trials were new or already there, and why the
    results were kept apart from an existing campaign of the same name (None: merged or new)."""

    campaign: str
    dataset: Path
    new_trials: int
    duplicate_trials: int
    kept_apart: str | None


def comparable(theirs: Mapping[str, Any], ours: Mapping[str, Any], their_prints: Mapping[str, Any], our_prints: Mapping[str, Any]) -> str | None:
    """Why two datasets of one campaign cannot be merged (None: they can). Pure."""
    for key, label in (("schema_version", "schema version"), ("matrix_sha256", "matrix"), ("axis_types", "axis types")):
        if theirs.get(key) != ours.get(key):
            return f"different {label} ({str(theirs.get(key))[:12]} vs {str(ours.get(key))[:12]})"
    known = list(our_prints.values())
    for host, fp in sorted(their_prints.items()):
        if fp not in known:
            return f"host {host} has a fingerprint no host of the existing campaign has ({', '.join(f'{k} {v}' for k, v in sorted(fp.items()))})"
    return None


def import_archive(archive: Path, datasets: Path) -> Imported:
    """Verify `archive` and add it under `datasets`: as a new campaign, merged into the existing campaign of
    that name (trials already there are skipped), or kept apart as `<campaign>--<id>` when incomparable."""
    datasets = datasets_dir(datasets)
    files: dict[str, bytes] = {}
    checked = verify(Path(archive), keep=files)
    target = datasets / checked.campaign
    if "dataset.json" not in files:
        raise BadDatasetError(f"{checked.archive.name}: refused: no dataset.json (not a runner dataset archive)")
    theirs = _json_member(files["dataset.json"], "dataset.json", checked.archive.name)
    for rel, data in files.items():  # checksums matched, but a crafted archive or damaged data packed so is refused here
        if rel.endswith(".json") and rel not in GENERATED:
            _json_member(data, rel, checked.archive.name)
        elif rel.endswith(".parquet"):
            try:
                pq.read_metadata(pa.BufferReader(data))
            except (pa.ArrowException, OSError):
                raise BadDatasetError(f"{checked.archive.name}: refused: {rel} is not a readable Parquet file") from None
    reason = None
    if (target / "dataset.json").exists():
        our_store = CampaignStore(target)
        ours_meta = our_store.meta()
        our_prints = {host: fingerprint(facts) for host, facts in our_store.host_facts().items()}
        reason = comparable(theirs, ours_meta, checked.fingerprints, our_prints)
        if reason is None:
            return _merge(checked, files, our_store)
        target = datasets / f"{checked.campaign}--{checked.manifest_sha256[:8]}"
        if (target / "dataset.json").exists():
            return _merge(checked, files, CampaignStore(target), reason)
    try:  # staged beside the target (same filesystem), made only now that the archive is known good
        datasets.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".import-{checked.campaign}.", dir=datasets))
    except (FileExistsError, NotADirectoryError) as exc:  # a file in the way: the path given is bad input
        raise UsageError(f"{exc.filename or datasets}: cannot make the datasets directory there: {exc.strerror}") from None
    except OSError as exc:
        raise DatasetError(f"{datasets}: cannot import into it: {exc.strerror or exc}") from None
    try:
        for rel, data in files.items():
            if rel not in GENERATED:
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
        _note_import(staging, checked, reason)
        os.replace(staging, target)
    except OSError as exc:  # a full disk, a read-only directory: nothing is imported
        raise DatasetError(f"{target}: cannot import: {exc.strerror or exc}; nothing imported") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    trials = {PurePosixPath(r).name.split(".")[0] for r in files if r.startswith("trials/")}
    return Imported(target.name, target, len(trials), 0, reason)


def datasets_dir(datasets: Path | str) -> Path:
    """The datasets directory to import into, checked before anything is read or fetched: it need not exist yet
    (it is made when something is imported), but a path that is not a directory is bad input."""
    datasets = Path(datasets)
    if datasets.exists() and not datasets.is_dir():
        raise UsageError(f"{datasets}: not a directory; give the datasets directory (--datasets, env RUNNER_DATASETS)")
    return datasets


def _note_import(root: Path, checked: Verified, reason: str | None) -> None:
    path = root / "provenance.json"
    prov = CampaignStore(root).read_provenance()  # {} if there is none; a damaged one is refused
    entry = {"archive": checked.archive.name, "manifest_sha256": checked.manifest_sha256, "at": datetime.now(UTC).isoformat(timespec="seconds"), "anonymized": checked.anonymized}
    if reason:
        entry["kept_apart_because"] = reason
    prov["imports"] = [*prov.get("imports", []), entry]
    write_json_atomic(path, prov)


def _merge(checked: Verified, files: Mapping[str, bytes], store: CampaignStore, reason: str | None = None) -> Imported:
    """Add the archive's trials that `store` does not have (by trial id), with their metrics and hosts."""
    with store:
        have = set(store.recorded())
        incoming = {PurePosixPath(r).name.split(".")[0] for r in files if r.startswith("trials/")}
        new = incoming - have
        try:
            for rel, data in sorted(files.items()):
                first = PurePosixPath(rel).parts[0]
                keep = (first in ("trials", "metrics") and PurePosixPath(rel).name.split(".")[0] in new) or (
                    first == "hosts" and not (store.root / rel).exists()
                )
                if keep:
                    dest = store.root / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
                    tmp.write_bytes(data)
                    os.replace(tmp, dest)
            _note_import(store.root, checked, reason)
        except OSError as exc:  # a full disk, a read-only directory (trial files are each whole or absent)
            raise DatasetError(f"{store.root}: cannot import: {exc.strerror or exc}") from None
    return Imported(store.root.name, store.root, len(new), len(incoming & have), reason)


# ----- querying ---------------------------------------------------------------------------------------
def campaigns(datasets: Path) -> list[Path]:
    datasets = Path(datasets)
    return sorted(p.parent for p in datasets.glob("*/dataset.json") if not p.parent.name.startswith(".")) if datasets.exists() else []


def connect_views(datasets: Path) -> Any:
    """A DuckDB connection with views `metrics` and `trials` over every campaign under `datasets`; column
    `dataset` names the campaign directory (kept-apart imports differ from `campaign` there)."""
    import duckdb

    roots = campaigns(datasets)
    if not roots:  # as for `runner status` or `report` without a campaign: bad input (exit 2)
        raise UsageError(f"no campaign in {datasets}/; run `runner launch` or `runner dataset import` first, or name the "
                         "datasets directory (--datasets, env RUNNER_DATASETS)")
    con = duckdb.connect()
    for table in ("metrics", "trials"):
        files = [str(p) for root in roots for p in (root / table).glob("workload=*/*.parquet")]
        if not files:
            con.close()
            raise BadDatasetError(f"no {table} files in any campaign under {datasets}/ (no trial has finished yet?)")
        listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
        try:  # reads every file's footer (union_by_name): a damaged file is found here
            con.execute(
                f"CREATE VIEW {table} AS SELECT * EXCLUDE (filename), "
                f"regexp_extract(filename, '([^/]+)/{table}/workload=', 1) AS dataset "
                f"FROM read_parquet({listing}, hive_partitioning=true, union_by_name=true, filename=true)"
            )
        except duckdb.Error as exc:
            con.close()
            why = " ".join(str(exc).split("\n")[0].split())
            m = re.search(r"'([^']+\.parquet)'", why)
            why = why.split(": ", 1)[-1].replace(f" '{m[1]}'", "") if m else why
            raise BadDatasetError(f"{m[1] if m else datasets}: damaged {table} data: {why}") from None
    return con


def query(sql: str, datasets: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run `sql` over the views; returns (column names, rows)."""
    import duckdb

    if not sql.strip():
        raise UsageError("empty query; give SQL over the views `metrics` and `trials`, e.g. \"SELECT count(*) FROM metrics\"")
    con = connect_views(datasets)
    try:
        cur = con.execute(sql)
        if cur.description is None:  # a statement without a result (SET, CREATE ...)
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {' '.join(str(exc).split())}") from None
    finally:
        con.close()


# ----- publishing -------------------------------------------------------------------------------------
# URL schemes for sharing, and the Python packages their fsspec backend needs beyond fsspec itself (checked
# before any connection; the project's `share` extra installs those of s3 and http). HTTP(S) is read-only:
# fetch only. A URL without a scheme is a local path.
SHARE_SCHEMES: dict[str, tuple[str, ...]] = {
    "file": (), "sftp": ("paramiko",), "s3": ("s3fs",), "gs": ("gcsfs",), "gcs": ("gcsfs",),
    "http": ("aiohttp",), "https": ("aiohttp",),
}
READ_ONLY_SCHEMES = ("http", "https")
NETWORK_SCHEMES = ("sftp", "http", "https")  # URLs that name a host (object stores name a bucket)
OBJECT_STORES = ("s3", "gs", "gcs")  # no directories to make; a missing bucket is an error, never created
S3_ENDPOINT_ENV = "RUNNER_S3_ENDPOINT"  # an S3-compatible server (MinIO, Ceph RGW, ...) instead of AWS
CHECKSUM_SUFFIX = ".sha256"  # NAME.tar.gz.sha256 beside the archive, `sha256sum -c` format


def s3_endpoint_url(value: str | None) -> str | None:
    """The endpoint of an S3-compatible server, checked: http(s)://HOST[:PORT][/PATH]; None: botocore's own
    choice (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, ~/.aws/config, else AWS). Pure."""
    from urllib.parse import urlsplit

    if value is None or not value.strip():
        return None
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"S3 endpoint (--s3-endpoint or {S3_ENDPOINT_ENV}) {value!r}: not an http(s)://HOST[:PORT] URL; "
                         "e.g. http://127.0.0.1:9000")
    return value.strip()


def share_filesystem(url: str, *, write: bool, s3_endpoint: str | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path) of a sharing URL. Refuses, before any connection, with one line: an empty URL,
    a scheme not meant for sharing (listing the known ones), a read-only scheme for publishing, a scheme
    whose backend package is not installed (naming it) and a malformed S3 endpoint. `s3_endpoint` applies to
    s3:// URLs only (other schemes ignore it, so RUNNER_S3_ENDPOINT can stay set)."""
    import importlib.util

    import fsspec

    if not url.strip():
        raise UsageError("empty URL; give a directory: a local path, file:///srv/share, s3://bucket/lab, ...")
    protocol, _ = fsspec.core.split_protocol(url)
    scheme = (protocol or "file").lower()
    if scheme not in SHARE_SCHEMES:
        raise UsageError(f"{url}: unknown URL scheme {scheme!r}; known: {', '.join(SHARE_SCHEMES)} (or a local path)")
    if write and scheme in READ_ONLY_SCHEMES:
        writable = ", ".join(s for s in SHARE_SCHEMES if s not in READ_ONLY_SCHEMES)
        raise UsageError(f"{url}: cannot publish over {scheme}, which is read-only here; publish to {writable} and fetch over {scheme}")
    if scheme in NETWORK_SCHEMES:  # checked here: a backend would fail later with a traceback or an idna error
        from urllib.parse import urlsplit

        try:
            host = urlsplit(url).hostname
            _ = urlsplit(url).port  # raises ValueError on a bad port
        except ValueError as exc:
            raise UsageError(f"{url}: not a valid URL ({exc})") from None
        if not host:
            raise UsageError(f"{url}: give {scheme}://HOST/PATH" + ("" if write else "/NAME") + " (a host and a path on it)")
    options: dict[str, Any] = {"skip_instance_cache": True}  # no listing cached by an earlier call goes stale
    endpoint = s3_endpoint_url(s3_endpoint) if scheme == "s3" else None
    if endpoint:
        options["endpoint_url"] = endpoint
    missing = [pkg for pkg in SHARE_SCHEMES[scheme] if importlib.util.find_spec(pkg) is None]
    if missing:
        raise UsageError(f"{url}: the {scheme}:// scheme needs the Python package{'s' if len(missing) > 1 else ''} "
                         f"{' and '.join(missing)}: pip install {' '.join(missing)}")
    try:
        fs, path = fsspec.core.url_to_fs(url if protocol is None or protocol == scheme else scheme + url[len(protocol):], **options)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{url}: {' '.join(str(exc).split())}") from None
    except OSError as exc:  # backends that connect when made (sftp)
        raise DatasetError(f"{url}: cannot connect: {_why(exc)}") from None
    bucket, _, key = path.strip("/").partition("/")
    if scheme in OBJECT_STORES and (not bucket or (not write and not key)):
        raise UsageError(f"{url}: give {scheme}://BUCKET/PATH" + ("" if write else "/NAME") + " (a bucket and a path in it)")
    return fs, path


def publish(campaign: str, url: str, *, datasets: Path, anonymize: bool = False, s3_endpoint: str | None = None) -> str:
    """Pack the campaign and copy the archive to `url` (an fsspec URL of a directory); returns its URL.

    Nothing half-published appears under the final name: the archive is uploaded to a hidden staging name
    (`.NAME.tar.gz.PID.part`) and renamed when complete (on S3 a server-side copy, whole or not at all);
    then `NAME.tar.gz.sha256` is written the same way. An older checksum file is removed before the new
    archive takes the name, so an interrupted re-publish leaves an archive without a checksum file (still
    verified by its manifest on fetch), never one with a wrong one. A failed upload removes its staging file."""
    fs, base = share_filesystem(url, write=True, s3_endpoint=s3_endpoint)
    scheme = (fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]).lower()
    errors = _transfer_errors()
    base = base.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        archive = pack(campaign, Path(tmp) / "a.tar.gz", datasets=datasets, anonymize=anonymize)
        name = verify(archive).campaign + ".tar.gz"
        sums = Path(tmp) / "a.sha256"
        sums.write_text(f"{_sha256_file(archive)}  {name}\n")
        dest, staging = f"{base}/{name}", f"{base}/.{name}.{os.getpid()}.part"
        staged: list[str] = []
        try:
            if scheme not in OBJECT_STORES:
                fs.makedirs(base, exist_ok=True)
            staged.append(staging)
            fs.put_file(str(archive), staging)
            try:
                fs.rm_file(dest + CHECKSUM_SUFFIX)
            except FileNotFoundError:
                pass
            fs.mv(staging, dest)
            staged.remove(staging)
            staging = f"{base}/.{name}{CHECKSUM_SUFFIX}.{os.getpid()}.part"
            staged.append(staging)
            fs.put_file(str(sums), staging)
            fs.mv(staging, dest + CHECKSUM_SUFFIX)
            staged.remove(staging)
        except errors as exc:
            for path in staged:
                try:
                    fs.rm_file(path)
                except errors:
                    pass
            # the URL names a file, or a bucket that is not there (never made by publish): bad input
            bad_url = isinstance(exc, (FileExistsError, NotADirectoryError, FileNotFoundError))
            raise (UsageError if bad_url else DatasetError)(f"{url}: cannot publish: {_why(exc)}") from None
    return f"{url.rstrip('/')}/{name}"


def fetch(url: str, datasets: Path, *, s3_endpoint: str | None = None) -> Imported:
    """Copy an archive from an fsspec URL (`.../NAME` or `.../NAME.tar.gz`), check it against the
    `NAME.tar.gz.sha256` published beside it (if there is one), verify it and import it. A wrong checksum is
    refused before anything is imported."""
    if url.strip() and not url.endswith((".tar.gz", "://")):  # "sftp://" alone is refused as having no host
        url += ".tar.gz"
    datasets = datasets_dir(datasets)
    fs, path = share_filesystem(url, write=False, s3_endpoint=s3_endpoint)
    errors = _transfer_errors()
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / PurePosixPath(path).name
        try:
            fs.get_file(path, str(local))
            if local.is_dir():  # a backend that copies a directory
                raise IsADirectoryError(path)
            try:
                expected: bytes | None = fs.cat_file(path + CHECKSUM_SUFFIX)
            except FileNotFoundError:
                expected = None
        except FileNotFoundError:  # the user named an archive that is not there: bad input, as for `verify`
            raise UsageError(f"{url}: no such archive (give URL/NAME of an archive `runner dataset publish` wrote)") from None
        except IsADirectoryError:
            raise UsageError(f"{url}: no such archive (that is a directory)") from None
        except errors as exc:
            raise DatasetError(f"{url}: cannot fetch: {_why(exc)}") from None
        if expected is not None:
            want = expected.decode(errors="replace").split(maxsplit=1)[0].lower() if expected.strip() else ""
            if not re.fullmatch(r"[0-9a-f]{64}", want):
                raise BadDatasetError(f"{url}{CHECKSUM_SUFFIX}: refused: not a SHA-256 checksum line; nothing imported")
            got = _sha256_file(local)
            if got != want:
                raise BadDatasetError(f"{url}: refused: checksum mismatch: the archive's SHA-256 is {got[:16]}..., "
                                   f"{PurePosixPath(path).name}{CHECKSUM_SUFFIX} says {want[:16]}... "
                                   "(changed or damaged since it was published); nothing imported")
        return import_archive(local, datasets)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """What a filesystem backend raises when a transfer fails: OSError (most of them, and s3fs for S3 error
    replies), and the errors of botocore (no connection, no credentials) and aiohttp (HTTP) that are not."""
    import importlib

    from fsspec.exceptions import FSTimeoutError

    found: list[type[BaseException]] = [OSError, FSTimeoutError]
    for module, name in (("botocore.exceptions", "BotoCoreError"), ("aiohttp", "ClientError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            pass
    return tuple(found)


def _why(exc: BaseException) -> str:
    """One line of a backend's error (connection refused, permission denied, not found, no credentials)."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or " ".join(str(exc).split()) or type(exc).__name__
    if type(exc).__name__ == "NoCredentialsError":
        text += " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    return text
