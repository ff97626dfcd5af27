"""The campaign dataset on disk: the only module that writes Parquet (runner.records.reading reads it).

Every attempt of every trial is one small Parquet file per table, written under a hidden staging name,
fsynced and renamed into place, so a reader or a killed controller never sees a partial file. The trial
file is written after the metrics file and is the commit mark: metrics without a trial record are the
leftovers of a crash and are removed when the campaign is opened again. The status is part of the file
name (`<trial_id>.a<attempt>.<status>.parquet`), so resuming needs a directory listing, not a read.
See runner.records.schema for the layout and the columns. The names of runner.records.atomic and
runner.records.reading are importable from here too, where they were.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from runner import defaults
from runner.errors import DatasetError, UsageError
from runner.hosts import process
from runner.hosts.process import ProcessId
from runner.records.atomic import json_default, write_bytes_atomic, write_json_atomic
from runner.records.metric import Metric
from runner.records.reading import (
    CORE_COLUMNS,
    FILE_RE,
    HOST_FACT_TIMES,
    META_KINDS,
    META_TYPES,
    CampaignReader,
    Recorded,
    damaged_file,
    find_campaign,
    read_campaign,
    read_json,
    split_host_file,
)
from runner.records.schema import (
    GUEST_FIELDS,
    SCHEMA_VERSION,
    TRIAL_ROLE,
    data_card_columns,
    data_dictionary,
    metrics_schema,
    trials_schema,
)
from runner.textfile import StrictLoader, check_file_name

__all__ = [  # this module's names and those it re-exports (runner.records.atomic, runner.records.reading)
    "CAMPAIGN_NAME", "CORE_COLUMNS", "FILE_RE", "HOST_FACT_TIMES", "ID_KEYS", "META_KINDS", "META_TYPES", "NUMBERS",
    "AttemptRecord", "CampaignReader", "CampaignStore", "LockHolder", "Recorded", "damaged_file", "find_campaign",
    "integral_float", "lock_text", "now", "parquet_bytes", "parse_lock", "read_campaign", "read_json", "split_host_file",
    "write_bytes_atomic", "write_json_atomic",
]

# A campaign's name, which is its dataset's directory name: a matrix's `campaign` (runner/matrix/schema.json), or
# one made from it (a dated instance, an import kept apart). Never a path: `..` would name a directory outside.
CAMPAIGN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class AttemptRecord:
    """The outcome of one attempt of one trial, as stored in the `trials` table."""

    trial_id: str
    cell_id: str
    repetition: int
    attempt: int
    host: str
    status: str  # ok | failed | timeout
    error: str | None
    started_at: float  # epoch seconds
    ended_at: float
    wall_s: float
    workload_wall_s: float | None
    params: Mapping[str, Any]
    env: str = "host"
    accel: str | None = "none"
    guest_json: str | None = None
    guest: Mapping[str, Any] = field(default_factory=dict)  # the GUEST_FIELDS columns (boot_id, ...)
    failure_kind: str | None = None  # failed | timeout | host; decides retries, not stored
    metrics: tuple[Metric, ...] = field(default=())
    notes: tuple[str, ...] = ()  # one-line reports for the progress display (e.g. a probe unavailable); not stored
    role: str | None = None  # None: a repetition of the cell (stored as `trial`); "canary": a re-run of the canary cell (Trial.role)

    @classmethod
    def build(
        cls,
        trial: Any,
        attempt: int,
        host: str,
        status: str,
        error: str | None,
        kind: str | None,
        *,
        started_at: float,
        ended_at: float | None = None,
        wall_s: float = 0.0,
        workload_wall_s: float | None = None,
        accel: str | None = "none",
        guest_json: str | None = None,
        guest: Mapping[str, Any] | None = None,
        metrics: Sequence[Metric] = (),
    ) -> AttemptRecord:
        """The one builder of attempt records (the worker's for a run attempt, the controller's for one that
        never ran): the trial's identity and parameters (a runner.trials.Trial), then what happened.
        `kind` is the failure kind (None for ok); `ended_at` defaults to `started_at` (nothing ran)."""
        params = trial.param_dict
        return cls(
            trial_id=trial.trial_id,
            cell_id=trial.cell_id,
            repetition=trial.repetition,
            attempt=attempt,
            host=host,
            status=status,
            error=error,
            started_at=started_at,
            ended_at=started_at if ended_at is None else ended_at,
            wall_s=wall_s,
            workload_wall_s=workload_wall_s,
            params=params,
            env=str(params.get("env", defaults.ENV)),
            accel=accel,
            guest_json=guest_json,
            failure_kind=kind,
            metrics=tuple(metrics),
            guest=dict(guest or {}),
            role=getattr(trial, "role", None),
        )


@dataclass(frozen=True)
class LockHolder:
    """The controller process named in a campaign's lock file: `line` for messages ('pid N on HOST since T')."""

    line: str
    controller: str
    process: ProcessId


_LOCK_LINE = re.compile(r"pid (\d+) on (\S+) since \S+")

_LOCK_IDENTITY = re.compile(r"process start (\d+|-) boot (\S+)")


def lock_text(me: ProcessId, controller: str, since: datetime) -> str:
    """The lock file's text: 'pid N on HOST since T', then the process's start time and boot id (pure)."""
    start = "-" if me.start is None else str(me.start)
    return f"pid {me.pid} on {controller} since {since.isoformat(timespec='seconds')}\nprocess start {start} boot {me.boot or '-'}\n"


def parse_lock(text: str) -> LockHolder | None:
    """The holder named by a lock file's text (pure); None for an empty or foreign text."""
    lines = text.strip().splitlines()
    first = _LOCK_LINE.fullmatch(lines[0].strip()) if lines else None
    if first is None:
        return None
    start, boot = None, None
    if len(lines) > 1 and (more := _LOCK_IDENTITY.fullmatch(lines[1].strip())):
        start = None if more[1] == "-" else int(more[1])
        boot = None if more[2] == "-" else more[2]
    return LockHolder(lines[0].strip(), first[2], ProcessId(int(first[1]), start, boot))


class CampaignStore(CampaignReader):
    """One campaign's dataset directory (datasets/<campaign>/), written: what it reads is CampaignReader's."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._lock_fh: Any = None
        self.notes: list[str] = []  # one line per damaged record a launch moved aside (set_aside_damaged)

    # -- opening ------------------------------------------------------------------------------------
    def initialise(
        self,
        *,
        campaign: str,
        workload: str,
        matrix_text: str,
        matrix_sha256: str,
        axis_types: Mapping[str, str],
        trial_count: int,
        seed: int,
        provenance: Mapping[str, Any],
    ) -> bool:
        """Create the dataset, or check that an existing one was made from the same matrix.

        Returns True when the dataset already existed (a resume). Must be called with the lock held.
        """
        if self.meta_path.exists():
            meta = self.meta()
            if meta["matrix_sha256"] != matrix_sha256:
                raise DatasetError(
                    f"campaign {campaign!r} already exists in {self.root} with a different matrix "
                    f"(sha256 {meta['matrix_sha256'][:12]}, now {matrix_sha256[:12]}); "
                    "give the changed matrix a new campaign name, or remove the old dataset"
                )
            if meta.get("numbers") != NUMBERS and (example := integral_float(matrix_text)) is not None:
                raise DatasetError(
                    f"{self.root}: launched by a runner that told {example} from {int(float(example))}: this runner makes "
                    "them one value, so the trial ids of its cells changed, and a relaunch would measure them again beside "
                    "their records; launch the matrix under a new campaign name, or finish this one with the runner that began it"
                )
            self._remove_leftovers()
            self.set_aside_damaged()
            launches = self.read_provenance().get("launches", [])
            self._write_provenance({**provenance, "launches": [*launches, _launch_entry()]})
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.root / "matrix.yml", matrix_text.encode())
        self._write_provenance({**provenance, "launches": [_launch_entry()]})
        self._write_dictionary(campaign, workload, axis_types)
        write_json_atomic(
            self.meta_path,
            {
                "schema_version": SCHEMA_VERSION,
                "campaign": campaign,
                "workload": workload,
                "matrix_sha256": matrix_sha256,
                "axis_types": dict(axis_types),
                "trials_planned": trial_count,
                "numbers": NUMBERS,
                "seed": seed,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        return False

    def _write_dictionary(self, campaign: str, workload: str, axis_types: Mapping[str, str]) -> None:
        """schema.json and DATA-CARD.md: the data dictionary of the dataset, beside its tables (schema version 6)."""
        dictionary = data_dictionary(axis_types)
        write_json_atomic(self.root / "schema.json", dictionary)
        card = "\n".join([
            f"# Data dictionary: {campaign}", "",
            f"Campaign `{campaign}`, workload `{workload}`, dataset schema version {SCHEMA_VERSION}"
            f" (runner.records.schema). Axes: {', '.join(f'`{a}`' for a in sorted(axis_types)) or 'none'}.", "",
            "Two tables as Parquet, partitioned by workload (`metrics/workload=<w>/*.parquet`, `trials/...`): one row per "
            "attempt of a trial in `trials`, its results in `metrics` (a total row has `thread` and `vm` null; per-thread "
            "and per-VM rows break it down). Every Parquet file carries these descriptions too (field metadata "
            "`description`; key-value metadata `description:<column>`).", "",
            "```", "duckdb -c \"SELECT lock, threads, median(value) FROM read_parquet('metrics/**/*.parquet', "
            "hive_partitioning=true) WHERE metric = 'throughput' AND thread IS NULL AND vm IS NULL AND role = 'trial' "
            "GROUP BY ALL\"", "```", "",
            data_card_columns(dictionary)])
        write_bytes_atomic(self.root / "DATA-CARD.md", card.encode())

    def _write_provenance(self, doc: Mapping[str, Any]) -> None:
        write_json_atomic(self.root / "provenance.json", dict(doc))

    def update_provenance(self, **fields: Any) -> None:
        self._write_provenance({**self.read_provenance(), **fields})

    # -- the lock -------------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Hold the campaign's lock (an flock: it goes away with the process, even on SIGKILL)."""
        path = self.root / "lock"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")  # noqa: SIM115 - held for the life of the campaign
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:  # the datasets path given is a file
            raise UsageError(f"{exc.filename}: cannot make the campaign's dataset there: {exc.strerror}") from None
        except OSError as exc:
            raise DatasetError(f"{exc.filename or path}: cannot open the campaign's dataset: {exc.strerror}") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = (fh.read().strip().splitlines() or ["another process"])[0]
            fh.close()
            raise DatasetError(
                f"campaign {self.root.name!r} is already being run ({holder}); wait for it to finish or stop it"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(lock_text(process.current(), socket.gethostname(), datetime.now(UTC)))
        fh.flush()
        self._lock_fh = fh

    def lock_holder(self) -> LockHolder | None:
        """Who took the campaign's lock last (read without locking; it may have died since)."""
        try:
            return parse_lock(self.root.joinpath("lock").read_text())
        except (OSError, UnicodeDecodeError):
            return None

    def release(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.seek(0)
            self._lock_fh.truncate()
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> CampaignStore:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- trials -----------------------------------------------------------------------------------------
    def write_attempt(self, campaign: str, workload: str, axis_types: Mapping[str, str], rec: AttemptRecord) -> None:
        """Store one attempt: its metrics (if any), then its trial record. Idempotent by trial id and attempt.

        A failed write (a full disk) raises DatasetError and leaves no partial file: what was recorded
        before stays readable, and a relaunch measures this trial again.
        """
        try:
            self._write_attempt(campaign, workload, axis_types, rec)
        except OSError as exc:
            for tmp in self.root.glob("*/workload=*/.*.tmp"):
                tmp.unlink(missing_ok=True)
            name = f"{rec.trial_id}.a{rec.attempt}.{rec.status}.parquet"
            if not (self.root / "trials" / f"workload={workload}" / name).exists():  # metrics without their commit mark
                (self.root / "metrics" / f"workload={workload}" / name).unlink(missing_ok=True)
            raise DatasetError(
                f"cannot write results to {self.root}: {_os_reason(exc)}; the {len(self.recorded())} trials "
                "recorded so far are kept; make room and launch again to resume"
            ) from None

    def _write_attempt(self, campaign: str, workload: str, axis_types: Mapping[str, str], rec: AttemptRecord) -> None:
        name = f"{rec.trial_id}.a{rec.attempt}.{rec.status}.parquet"
        common = {
            "campaign": campaign,
            "trial_id": rec.trial_id,
            "cell_id": rec.cell_id,
            "repetition": rec.repetition,
            "attempt": rec.attempt,
            "host": rec.host,
            "env": rec.env,
            "accel": rec.accel,
            "role": rec.role or TRIAL_ROLE,
        }
        axes = {axis: _coerce(rec.params.get(axis), kind) for axis, kind in axis_types.items()}
        if rec.metrics:
            rows = [
                {
                    **common,
                    "metric": m.name,
                    "value": m.value,
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "thread": m.thread,
                    "vm": m.vm,
                    "probe": m.probe,
                    "side": m.side,
                    **axes,
                }
                for m in rec.metrics
            ]
            self._write_table(self.root / "metrics" / f"workload={workload}" / name, rows, metrics_schema(axis_types))
        trial_row = {
            **common,
            "status": rec.status,
            "error": rec.error,
            "started_at": datetime.fromtimestamp(rec.started_at, UTC),
            "ended_at": datetime.fromtimestamp(rec.ended_at, UTC),
            "wall_s": rec.wall_s,
            "workload_wall_s": rec.workload_wall_s,
            "params_json": json.dumps(dict(rec.params), sort_keys=True, default=json_default),
            "guest_json": rec.guest_json,
            **_guest_columns(rec.guest),
            **axes,
        }
        self._write_table(self.root / "trials" / f"workload={workload}" / name, [trial_row], trials_schema(axis_types))

    def write_host_facts(self, host: str, facts: Mapping[str, Any], *, when: str = "before") -> Path:
        check_file_name(host, "host name")  # hosts/<host>.json stays in hosts/, whatever the inventory says
        if split_host_file(f"{host}.json") != (host, "before"):
            raise UsageError(f"host name {host!r} is not allowed: it ends like a file of facts taken {split_host_file(host + '.json')[1]}")
        path = self.root / "hosts" / (f"{host}.json" if when == "before" else f"{host}.{when}.json")
        write_json_atomic(path, dict(facts))
        return path

    @staticmethod
    def _write_table(path: Path, rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> None:
        table = pa.Table.from_pylist(list(rows), schema=schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        pq.write_table(table, tmp, write_page_checksum=True)  # a page damaged later fails its CRC when read
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def set_aside_damaged(self) -> list[Path]:
        """Move every damaged record (and the other table's file of the same attempt) into damaged/ of the
        dataset, so its trial is measured again; one line per file in `notes`. Called with the lock held."""
        moved = []
        for path, why in self.damaged():
            for table in ("trials", "metrics"):
                src = self.root / table / path.parent.name / path.name
                if not src.exists():
                    continue
                dst = self.root / "damaged" / table / path.parent.name / path.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                n = 1
                while dst.exists():  # damaged twice across launches: keep both
                    dst, n = dst.with_name(f"{path.name}.{n}"), n + 1
                os.replace(src, dst)
                moved.append(dst)
            self.notes.append(f"warning: {path}: damaged ({why}); moved into {self.root / 'damaged'}/ and measured again")
        return moved

    def _remove_leftovers(self) -> None:
        """Staging files and metrics without a trial record are what a killed controller leaves."""
        committed = {p.name for p in self._files("trials")}
        for table in ("trials", "metrics"):
            base = self.root / table
            if base.exists():
                for tmp in base.glob("workload=*/.*.tmp"):
                    tmp.unlink(missing_ok=True)
        for path in list(self._files("metrics")):
            if path.name not in committed:
                path.unlink(missing_ok=True)


# How numbers make trial ids: "normal" since 1.0 and 1 are one value (runner.matrix.load.normal_numbers). A dataset
# without it was launched before; its trial ids differ only where its matrix writes integral floats.
NUMBERS = "normal"


ID_KEYS = ("workload", "axes", "include", "exclude", "canary", "guest_kernels", "guest_images")  # what makes trial ids


def integral_float(matrix_text: str) -> str | None:
    """The first integral float (`2.0`, `1e3`) written where a matrix's values make trial ids (ID_KEYS), as written;
    None if there is none (or the text does not read: it was checked when launched)."""
    try:
        root = yaml.compose(matrix_text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError):
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    stack = [v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value in ID_KEYS]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:float":
                try:
                    value = float(node.value.replace("_", ""))
                except ValueError:
                    continue
                if value.is_integer():
                    return node.value
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(v for _, v in node.value)
    return None


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as Parquet file contents (for archives); files in a dataset go through CampaignStore."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def _os_reason(exc: OSError) -> str:
    """The system's words for an OSError, also when pyarrow wraps it ('... Detail: [errno 28] ...')."""
    code = exc.errno
    if code is None and (m := re.search(r"\[errno (\d+)\]", str(exc))):
        code = int(m.group(1))
    return os.strerror(code) if code else " ".join(str(exc).split())


def _coerce(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "str":
        return value if isinstance(value, str) else json.dumps(value)
    if kind == "float":
        return float(value)
    return value


def _launch_entry() -> dict[str, Any]:
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid(), "controller": socket.gethostname()}


def _guest_columns(guest: Mapping[str, Any]) -> dict[str, Any]:
    out = {f.name: guest.get(f.name) for f in GUEST_FIELDS}
    for key in ("window_start", "window_end"):
        if out[key] is not None:
            out[key] = datetime.fromtimestamp(out[key], UTC)
    return out


def now() -> float:
    return time.time()
