"""Reading a campaign dataset and checking what it holds (runner.records.store writes it): dataset.json and the
other JSON files, each checked; the tables, read as the current schema version; damaged recorded files (unreadable,
of the wrong schema, not the record their name says), found by reading every page; finding a campaign
by name or path; and `read_campaign`, a campaign's tables and provenance for analysis.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import BadDatasetError, DatasetError, UnknownNameError, UsageError
from runner.records.schema import AXIS_TYPES, PARTITION_COLUMN, READABLE_SCHEMAS, SCHEMA_VERSION, metrics_schema, trials_schema, upgrade

FILE_RE = re.compile(r"^(?P<trial>[0-9a-f]+)\.a(?P<attempt>\d+)\.(?P<status>ok|failed|timeout)\.parquet$")

HOST_FACT_TIMES = ("after",)  # hosts/<host>.<when>.json beside hosts/<host>.json (taken before)


def split_host_file(filename: str) -> tuple[str, str]:
    """'numa80.lab.json' -> ('numa80.lab', 'before'); 'numa80.lab.after.json' -> ('numa80.lab', 'after')."""
    stem = filename.removesuffix(".json")
    for when in HOST_FACT_TIMES:
        if stem.endswith("." + when):
            return stem[: -len(when) - 1], when
    return stem, "before"


@dataclass(frozen=True)
class Recorded:
    """What the dataset already holds for one trial."""

    attempts: int
    ok: bool


class CampaignReader:
    """One campaign's dataset directory (datasets/<campaign>/) as read: its description, provenance, matrix,
    host facts and tables, each checked (runner.records.store.CampaignStore, which writes it, is one)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._checked: dict[tuple[str, int, int], str | None] = {}  # damaged_file's answers, by file state

    # -- opening ------------------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / "dataset.json"

    def meta(self) -> dict[str, Any]:
        """dataset.json, checked: a missing, damaged or incompatible one raises BadDatasetError naming the file."""
        try:
            meta = read_json(self.meta_path, "dataset description")
        except FileNotFoundError:
            raise BadDatasetError(f"{self.root}: not a campaign dataset (no dataset.json)") from None
        if not isinstance(meta, dict):
            raise BadDatasetError(f"{self.meta_path}: damaged dataset description: a JSON {type(meta).__name__}, not an object")
        version = meta.get("schema_version")
        if type(version) is not int or version not in READABLE_SCHEMAS:  # not a bool, not a list (unhashable)
            raise BadDatasetError(
                f"{self.root}: dataset schema version {version!r} is not readable by this runner (reads version {SCHEMA_VERSION})"
            )
        for key, (kind, required) in META_TYPES.items():
            value = meta.get(key)
            if (key in meta or required) and (not isinstance(value, kind) or isinstance(value, bool)):
                what = "missing" if key not in meta else f"{value!r} is not {META_KINDS[kind]}"
                raise BadDatasetError(f"{self.meta_path}: damaged dataset description: {key}: {what}")
        for axis, kind in meta["axis_types"].items():
            if not isinstance(kind, str) or kind not in AXIS_TYPES:
                raise BadDatasetError(f"{self.meta_path}: damaged dataset description: axis_types.{axis}: {kind!r} "
                                      f"is not one of {', '.join(AXIS_TYPES)}")
        return meta

    def read_provenance(self) -> dict[str, Any]:
        path = self.root / "provenance.json"
        try:
            doc = read_json(path, "provenance")
        except FileNotFoundError:
            return {}
        if not isinstance(doc, dict):
            raise BadDatasetError(f"{path}: damaged provenance: a JSON {type(doc).__name__}, not an object")
        return doc

    def matrix_text(self) -> str:
        """The campaign's matrix.yml as launched; a missing or damaged one raises BadDatasetError naming it."""
        path = self.root / "matrix.yml"
        try:
            return path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise BadDatasetError(f"{path}: damaged dataset: cannot read the campaign's matrix: {why}") from None

    def host_facts(self, when: str = "before") -> dict[str, dict[str, Any]]:
        """Facts of every host taken at `when` (before or after the campaign), by host name."""
        out = {}
        for path in _listdir(self.root / "hosts", missing_ok=True):
            if path.suffix != ".json" or path.name.startswith("."):
                continue
            host, taken = split_host_file(path.name)
            if taken == when:
                out[host] = read_json(path, "host facts")
                if not isinstance(out[host], dict):
                    raise BadDatasetError(f"{path}: damaged host facts: a JSON {type(out[host]).__name__}, not an object")
        return out

    # -- trials -----------------------------------------------------------------------------------------
    def recorded(self) -> dict[str, Recorded]:
        """trial id -> attempts recorded so far and whether one succeeded."""
        found: dict[str, list[tuple[int, str]]] = {}
        for path in self._files("trials"):
            m = FILE_RE.fullmatch(path.name)
            if m:
                found.setdefault(m["trial"], []).append((int(m["attempt"]), m["status"]))
        out = {}
        for tid, attempts in found.items():
            attempts.sort()
            out[tid] = Recorded(attempts[-1][0], any(s == "ok" for _, s in attempts))
        return out

    def _files(self, table: str) -> list[Path]:
        """The table's committed files (workload=*/<name>.parquet). A directory that cannot be read raises
        DatasetError naming it: taken for empty, it would make a relaunch measure (and overwrite) again."""
        out: list[Path] = []
        for part in _listdir(self.root / table, missing_ok=True):
            if part.name.startswith("workload=") and part.is_dir():
                out.extend(f for f in _listdir(part) if f.suffix == ".parquet" and not f.name.startswith("."))
        return sorted(out)

    def damaged(self, *, tables: Sequence[str] = ("trials", "metrics")) -> list[tuple[Path, str]]:
        """(file, why) of every recorded Parquet file (of `tables`) that cannot be read, is of the wrong schema or is
        not the record its name says: such a trial is not recorded, for launch, status and report alike. Every
        page is read (damaged_file), each file once per reader while it is unchanged (reading its table counts)."""
        meta = self.meta()
        out = []
        for table in tables:
            schema = (metrics_schema if table == "metrics" else trials_schema)(meta["axis_types"])
            for path in self._files(table):
                try:
                    st = path.stat()
                except OSError as exc:
                    out.append((path, exc.strerror or str(exc)))
                    continue
                key = (str(path), st.st_mtime_ns, st.st_size)
                if key not in self._checked:
                    self._checked[key] = damaged_file(path, table, schema)
                if (why := self._checked[key]) is not None:
                    out.append((path, why))
        return out

    def check_recorded(self, tables: Sequence[str] = ("trials", "metrics")) -> None:
        """Refuse the dataset (BadDatasetError naming the file) if a recorded file of `tables` is damaged, every
        page read: what `runner launch` moves aside is not counted as recorded by a command that reads less of it."""
        for path, why in self.damaged(tables=tables):
            raise _damaged_error(path, why)

    # -- reading -------------------------------------------------------------------------------------------
    def read_table(self, table: str) -> pa.Table:
        """The table, every recorded file read whole and checked as a relaunch checks it (damaged_file): a
        damaged one raises BadDatasetError naming it. Files of older schema versions read as the current one
        (columns they lack are null; schema.upgrade); `workload` comes from each file's partition directory."""
        meta = self.meta()
        schema = (metrics_schema if table == "metrics" else trials_schema)(meta["axis_types"])
        full = schema.append(pa.field(PARTITION_COLUMN, pa.string()))
        parts, partitions = [], []
        for path in self._files(table):
            try:
                st = path.stat()
                got = read_whole(path)
            except (pa.ArrowException, OSError) as exc:
                raise _damaged_error(path, _why(exc)) from None
            key = (str(path), st.st_mtime_ns, st.st_size)
            if (why := self._checked.setdefault(key, _why_damaged(path, table, schema, got.schema, got.num_rows, _ids(got)))) is not None:
                raise _damaged_error(path, why)
            parts.append(got.replace_schema_metadata(None))
            partitions.append((unquote(path.parent.name.partition("=")[2]), got.num_rows))
        if not parts:
            return full.empty_table()
        # One table of all the files (a column some lack, an older version's, is null there), as `full` has it.
        return upgrade(_conform(pa.concat_tables(parts, promote_options="default"), full, partitions))


def _listdir(path: Path, missing_ok: bool = False) -> list[Path]:
    """The entries of a dataset directory, sorted; one that cannot be read raises DatasetError (exit 1) naming it."""
    try:
        return sorted(path.iterdir())
    except FileNotFoundError:
        if missing_ok:
            return []
        raise DatasetError(f"{path}: cannot read the directory: it vanished while read") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the directory: {exc.strerror}; what it holds is unknown, so nothing "
                           "is taken as recorded or measured again") from None


def _damaged_error(path: Path, why: str) -> BadDatasetError:
    return BadDatasetError(f"{path}: damaged {path.parent.parent.name} data: {why}; `runner launch` of the campaign moves it "
                           "into damaged/ and measures the trial again")


# Columns every record of a table has had in every readable schema version: a file without one is of the wrong schema.
CORE_COLUMNS = {"trials": ("trial_id", "attempt", "status"), "metrics": ("trial_id", "metric", "value")}


def damaged_file(path: Path, table: str, schema: pa.Schema) -> str | None:
    """Why one recorded file is damaged (None when it is sound): it cannot be read (truncated, garbled,
    unreadable: every page is decoded, as a footer alone misses a damaged page behind a sound one), lacks a
    core column or has a column of another type than `schema` says, or is not the record of the trial its
    name says."""
    try:
        got = read_whole(path)
    except (pa.ArrowException, OSError) as exc:
        return _why(exc)
    return _why_damaged(path, table, schema, got.schema, got.num_rows, _ids(got))


def _why(exc: BaseException) -> str:
    """One line of why a recorded file cannot be read."""
    why = re.sub(r"^Could not open Parquet input source '[^']*': ", "", " ".join(str(exc).split()))
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else why)[:200]


def _ids(got: pa.Table) -> set[str]:
    return set(got.column("trial_id").unique().to_pylist()) if "trial_id" in got.column_names else set()


def _why_damaged(path: Path, table: str, schema: pa.Schema, fields: pa.Schema, rows: int, ids: set[str]) -> str | None:
    """Why a readable recorded file (its schema `fields`, `rows` rows, trial ids `ids`) is damaged, or None."""
    names = set(fields.names)
    missing = [c for c in CORE_COLUMNS[table] if c not in names]
    if missing:
        return f"wrong schema: no column {', '.join(missing)}"
    types = _types(schema)
    for f in fields:
        want = types.get(f.name)
        if want is not None and f.type != want and not pa.types.is_null(f.type):
            return f"wrong schema: column {f.name} is {f.type}, not {want}"
    m = FILE_RE.fullmatch(path.name)
    if table == "trials" and rows != 1:
        return f"{rows} rows, not the one row of an attempt"
    if m is not None and ids - {m["trial"]}:
        return f"holds trial {sorted(ids - {m['trial']})[0]}, not {m['trial']}"
    return None


@functools.lru_cache(maxsize=16)
def _types(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in schema}


def read_whole(path: Path) -> pa.Table:
    """Every page of one recorded file, decoded: the file read in one call and decoded on this thread. A
    recorded file is one attempt's rows (kilobytes), and pq.read_table's dataset machinery (a filesystem,
    threads, partition discovery) cost a relaunch about three times as much per file (bench/resume_bench.py).
    Each page's CRC (written since schema 7's files; older files have none to check) is verified, so a flipped
    bit in a value that still decodes is damage too, not a different measurement."""
    return pq.ParquetFile(pa.BufferReader(path.read_bytes()), page_checksum_verification=True).read(use_threads=False)


def _conform(got: pa.Table, schema: pa.Schema, partitions: Sequence[tuple[str, int]]) -> pa.Table:
    """The recorded files' rows as `schema` has them: its columns in its order and types (a column of all nulls
    is written as type null), the ones no file has null, and the partition column from `partitions`, each
    file's (workload, rows) in order."""
    columns = []
    for f in schema:
        if f.name == PARTITION_COLUMN:
            runs = [(w, sum(n for _, n in group)) for w, group in itertools.groupby(partitions, key=lambda p: p[0])]
            columns.append(pa.chunked_array([pa.repeat(pa.scalar(w, pa.string()), n) for w, n in runs], pa.string()))
        elif f.name in got.column_names:
            column = got.column(f.name)
            columns.append(column if column.type == f.type else column.cast(f.type))
        else:
            columns.append(pa.nulls(got.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def find_campaign(name_or_path: str | None, datasets: Path) -> Path:
    """A campaign given by name (under datasets/) or path; None means the most recently changed one.
    An unknown name, or no campaign at all, is bad input (exit 2): UnknownNameError lists the known campaigns."""
    datasets = Path(datasets)
    if name_or_path is None:
        candidates = [p for p in datasets.glob("*/dataset.json")] if datasets.exists() else []
        if not candidates:
            raise UsageError(f"no campaign in {datasets}/; run `runner launch matrix.yml` first, or name the datasets "
                             "directory (--datasets, env RUNNER_DATASETS)")
        return max(candidates, key=lambda p: p.stat().st_mtime).parent
    for cand in (Path(name_or_path), datasets / name_or_path):
        if (cand / "dataset.json").exists():
            return cand
    known = sorted(p.parent.name for p in datasets.glob("*/dataset.json")) if datasets.exists() else []
    raise UnknownNameError(f"no campaign {name_or_path!r} in {datasets}/; known: {', '.join(known) or 'none'}")


def read_campaign(campaign: str | Path, datasets: Path | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(metrics, trials, provenance) of a campaign as pandas DataFrames and a dict.

    `campaign` is a path or a name under `datasets`. The provenance dict holds the dataset.json fields,
    provenance.json, `hosts` (facts per host) and `matrix` (the matrix text).
    """
    root = find_campaign(str(campaign), Path(datasets or "datasets"))
    store = CampaignReader(root)
    meta = store.meta()
    prov = {**meta, **store.read_provenance(), "hosts": store.host_facts(), "matrix": store.matrix_text()}
    metrics = store.read_table("metrics").to_pandas()
    trials = store.read_table("trials").to_pandas()
    return metrics, trials, prov


def read_json(path: Path, what: str) -> Any:
    """A JSON file of a dataset. A missing file raises FileNotFoundError (the caller knows what that means);
    an unreadable or damaged one (empty, binary, not UTF-8, not JSON) raises BadDatasetError naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BadDatasetError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        why = "not UTF-8 text"
    except json.JSONDecodeError as exc:
        why = "the file is empty" if not data.strip() else f"not valid JSON ({exc.msg}, line {exc.lineno})"
    except RecursionError:
        why = "nested too deeply"
    raise BadDatasetError(f"{path}: damaged {what}: {why}")


# dataset.json keys readers rely on: key -> (type, required); schema_version is checked on its own.
META_TYPES: dict[str, tuple[type, bool]] = {"campaign": (str, True), "axis_types": (dict, True), "workload": (str, False),
                                           "matrix_sha256": (str, False), "trials_planned": (int, False)}


META_KINDS = {str: "a string", int: "an integer", dict: "an object"}
