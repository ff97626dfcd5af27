"""Importing a verified archive into the datasets: a new campaign, merged into the existing campaign of that
name (trials already there are skipped), or kept apart as `<campaign>--<id>` when the two are incomparable.
Imported files get the modes launched ones get (the umask's)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import BadDatasetError, DatasetError, UsageError
from runner.records.archive import GENERATED, Limits, Verified, _json_member, fingerprint, verify
from runner.records.store import CampaignStore, write_json_atomic


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


def import_archive(archive: Path, datasets: Path, *, limits: Limits | None = None) -> Imported:
    """Verify `archive` and add it under `datasets`: as a new campaign, merged into the existing campaign of
    that name (trials already there are skipped), or kept apart as `<campaign>--<id>` when incomparable.
    `limits`: what reading the archive may cost (default: Limits.from_env())."""
    datasets = datasets_dir(datasets)
    files: dict[str, bytes] = {}
    checked = verify(Path(archive), keep=files, limits=limits)
    target = datasets / checked.campaign
    if "dataset.json" not in files:
        raise BadDatasetError(f"{checked.archive.name}: refused: no dataset.json (not a runner dataset archive)")
    theirs = _json_member(files["dataset.json"], "dataset.json", checked.archive.name)
    if theirs.get("campaign") != checked.campaign:  # a name, as archive.json's (checked): a later pack writes there
        raise BadDatasetError(f"{checked.archive.name}: refused: dataset.json: campaign {str(theirs.get('campaign'))[:80]!r} "
                              f"is not the archive's campaign {checked.campaign!r}")
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
        staging.chmod(0o777 & ~_umask())  # as a launch makes it (mkdtemp's is private)
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


def _umask() -> int:
    """This process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
