"""Reading a campaign dataset and checking what it holds (runner.records.store writes it): dataset.json and the
other JSON files, each checked; the tables, read as the current schema version; damaged recorded files (unreadable,
of the wrong schema, not the record their name says), found from the whole file or its footer; finding a campaign
by name or path; and `read_campaign`, a campaign's tables and provenance for analysis.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from runner.errors import BadDatasetError, DatasetError, UnknownNameError, UsageError
from runner.records.schema import AXIS_TYPES, READABLE_SCHEMAS, SCHEMA_VERSION, metrics_schema, trials_schema, upgrade

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
        self._checked: dict[tuple[str, int, int, bool], str | None] = {}  # damaged_file's answers, by file state

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

    def damaged(self, *, whole: bool = True) -> list[tuple[Path, str]]:
        """(file, why) of every recorded Parquet file that cannot be read, is of the wrong schema or is not the
        record its name says: such a trial is not recorded, for launch, status and report alike. `whole`: read
        every page (damaged_file); else the footers only, each file once per store while it is unchanged."""
        meta = self.meta()
        out = []
        for table in ("trials", "metrics"):
            schema = (metrics_schema if table == "metrics" else trials_schema)(meta["axis_types"])
            for path in self._files(table):
                try:
                    st = path.stat()
                except OSError as exc:
                    out.append((path, exc.strerror or str(exc)))
                    continue
                key = (str(path), st.st_mtime_ns, st.st_size, whole)
                if key not in self._checked:
                    self._checked[key] = damaged_file(path, table, schema, whole=whole)
                if (why := self._checked[key]) is not None:
                    out.append((path, why))
        return out

    # -- reading -------------------------------------------------------------------------------------------
    def read_table(self, table: str) -> pa.Table:
        meta = self.meta()
        schema = (metrics_schema if table == "metrics" else trials_schema)(meta["axis_types"])
        schema = schema.append(pa.field("workload", pa.string()))
        files = [str(p) for p in self._files(table)]
        if not files:
            return schema.empty_table()
        for path, why in self.damaged(whole=False):  # named by file, before pyarrow casts or fills in what is wrong
            raise _damaged_error(path, why)
        part = pads.partitioning(pa.schema([("workload", pa.string())]), flavor="hive")
        try:
            dataset = pads.dataset(files, schema=schema, format="parquet", partitioning=part, partition_base_dir=str(self.root / table))
            return upgrade(dataset.to_table())  # older versions read as the current one (schema.upgrade)
        except (pa.ArrowException, OSError) as exc:  # a damaged page behind a sound footer, a file changed meanwhile
            for path, why in self.damaged():
                raise _damaged_error(path, why) from None
            why = " ".join(str(exc).split())
            m = re.match(r"Could not open Parquet input source '([^']+)': (.*)", why)
            where, why = (m[1], m[2]) if m else (str(self.root / table), why)
            raise BadDatasetError(f"{where}: damaged {table} data: {why}") from None


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


def damaged_file(path: Path, table: str, schema: pa.Schema, *, whole: bool = True) -> str | None:
    """Why one recorded file is damaged (None when it is sound): it cannot be read (truncated, garbled,
    unreadable), lacks a core column or has a column of another type than `schema` says, or is not the record
    of the trial its name says. `whole`: every page is read (what a relaunch does before it trusts a record);
    else only the footer (schema, row count, the trial_id column's statistics: what status and report check
    before reading the table, whose reading then finds damaged pages)."""
    try:
        if whole:
            got = pq.read_table(path)
            fields, rows, ids = got.schema, got.num_rows, set(got.column("trial_id").to_pylist()) if "trial_id" in got.column_names else set()
        else:
            pf = pq.ParquetFile(path)
            fields, rows, ids = pf.schema_arrow, pf.metadata.num_rows, _stat_values(pf, "trial_id")
    except (pa.ArrowException, OSError) as exc:
        why = re.sub(r"^Could not open Parquet input source '[^']*': ", "", " ".join(str(exc).split()))
        return (exc.strerror if isinstance(exc, OSError) and exc.strerror else why)[:200]
    missing = [c for c in CORE_COLUMNS[table] if c not in fields.names]
    if missing:
        return f"wrong schema: no column {', '.join(missing)}"
    for f in fields:
        want = schema.field(f.name).type if f.name in schema.names else None
        if want is not None and f.type != want and not pa.types.is_null(f.type):
            return f"wrong schema: column {f.name} is {f.type}, not {want}"
    m = FILE_RE.fullmatch(path.name)
    if table == "trials" and rows != 1:
        return f"{rows} rows, not the one row of an attempt"
    if m is not None and ids - {m["trial"]}:
        return f"holds trial {sorted(ids - {m['trial']})[0]}, not {m['trial']}"
    return None


def _stat_values(pf: pq.ParquetFile, column: str) -> set[str]:
    """The min and max of a string column in every row group's statistics (empty where none are written)."""
    try:
        i = pf.schema_arrow.get_field_index(column)
        out: set[str] = set()
        for g in range(pf.metadata.num_row_groups):
            stats = pf.metadata.row_group(g).column(i).statistics
            if stats is not None and stats.has_min_max:
                out |= {v.decode() if isinstance(v, bytes) else str(v) for v in (stats.min, stats.max)}
        return out
    except (pa.ArrowException, IndexError, KeyError, UnicodeDecodeError):
        return set()


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
