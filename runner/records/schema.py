"""The dataset's schema. Versioned: every Parquet file and the campaign's dataset.json carry SCHEMA_VERSION.

History of SCHEMA_VERSION:
  1 - first release: tables `trials` and `metrics`, axis values as top-level columns.
  2 - trials gain the guest columns (boot_id, boot_s, guest_kernel, guest_vcpus, guest_pins, guest_cmdline,
      guest_facts_json, window_start, window_end), null on the bare host. Version 1 datasets read as
      version 2 with those columns null.
  3 - trials gain guest_image and guest_image_digest (the guest image catalog name and its content
      address). Version 1 and 2 datasets read as version 3 with those columns null.
  4 - metrics gain `probe` and `side`: rows read by a probe (runner.probes) name it and where it read
      (guest or host); null for the workload's own results. Version 1-3 datasets read as version 4 with
      those columns null.
  5 - trials and metrics gain `role`: null for a trial of the matrix (a repetition of its cell), `canary`
      for a re-run of the matrix's canary cell (runner.execution.canary), which is not a repetition of that
      cell: the analysis keeps such rows out of the cell's statistics. Version 1-4 datasets read as version 5
      with `role` null.
  6 - the data describes itself: every column of both tables carries its meaning in the Parquet file (the Arrow
      field metadata `description`, which pyarrow and polars show, and the file's key-value metadata
      `description:<column>`, which any Parquet reader lists: DuckDB's parquet_kv_metadata()), and the dataset
      directory holds the data dictionary as schema.json and DATA-CARD.md (data_dictionary, data_card_columns).
      The descriptions cost about 9 KB per file (an attempt's metrics file of lockbench: 5 KB -> 14 KB).
      `role` is never null: `trial` for a trial of the matrix (was null), `canary` as before. Version 1-5
      datasets read as version 6: `upgrade` gives their null `role` the value `trial` (ordinary_role tells both
      apart from a canary run for frames read by other tools).
  7 - trials gain the guest kernel columns (issue 22): kernel_recipe, kernel_build, kernel_release,
      kernel_config_digest (a kernel the runner built from a recipe; its .config is kept once in the dataset as
      kernels/<kernel_build>.config), guest_uname and guest_pvspin (what the guest said). Version 1-6 datasets
      read as version 7 with those columns null.

Layout of one campaign (see runner.records.store, the only module that writes it):

    datasets/<campaign>/
        dataset.json            schema version, campaign, matrix hash, axis column types, runner version
        schema.json             the data dictionary: every column's type, meaning, unit and direction (version 6)
        DATA-CARD.md            the same for people, with how to read the tables (version 6)
        matrix.yml              the matrix file exactly as given
        provenance.json         runner version and git commit, command line, controller host
        hosts/<host>.json       facts of every host (taken at launch; issue 4 adds before/after)
        trials/workload=<w>/<trial_id>.a<attempt>.parquet    one row: one attempt of one trial
        metrics/workload=<w>/<trial_id>.a<attempt>.parquet   the metric rows of that attempt
        lock                    held by the controller running the campaign

`workload` is a hive partition column: it is in the path, not in the files (readers add it).
Axis values (e.g. `threads`, `lock`) are columns of both tables, typed per axis (int64, double or string),
so `SELECT lock, threads, median(value) FROM metrics WHERE metric = 'throughput' GROUP BY ALL` works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 7
READABLE_SCHEMAS = frozenset({1, 2, 3, 4, 5, 6, 7})
TRIAL_ROLE = "trial"  # `role` of a trial of the matrix (a repetition of its cell); runner.trials.CANARY: a canary run

# Columns that identify an attempt: the first columns of both tables (the store fills them from one dict).
ATTEMPT_FIELDS: list[pa.Field] = [
    pa.field("campaign", pa.string(), nullable=False),
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("cell_id", pa.string(), nullable=False),
    pa.field("repetition", pa.int32(), nullable=False),
    pa.field("attempt", pa.int32(), nullable=False),
    pa.field("host", pa.string(), nullable=False),
    pa.field("env", pa.string(), nullable=False),
    pa.field("accel", pa.string()),
    pa.field("role", pa.string()),  # trial: a repetition of the cell; canary: a re-run of the canary cell (null before v6)
]

# Columns every metrics file has, before the axis columns.
METRIC_FIELDS: list[pa.Field] = [
    *ATTEMPT_FIELDS,
    pa.field("metric", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("unit", pa.string()),
    pa.field("higher_is_better", pa.bool_()),
    pa.field("thread", pa.int32()),
    pa.field("vm", pa.int32()),
    pa.field("probe", pa.string()),
    pa.field("side", pa.string()),
]

# The fixed column names, said once: every other column of a metrics table is a matrix axis (runner.analysis
# tells a cell's parameters from the fixed columns with these).
PARTITION_COLUMN = "workload"  # hive partition column: in the path, not in the files (readers add it)
METRIC_COLUMNS: tuple[str, ...] = (*(f.name for f in METRIC_FIELDS), PARTITION_COLUMN)  # in table order
# The columns of a metric row that describe the measured value rather than the attempt.
VALUE_COLUMNS: tuple[str, ...] = tuple(f.name for f in METRIC_FIELDS[len(ATTEMPT_FIELDS):])

# Parameters of a trial (params_json) that hold the catalog entry of another parameter (guest_kernels:,
# guest_images:): they vary only with that parameter, which names them in tables and figures.
CATALOG_PARAMS: dict[str, str] = {"guest_kernel_spec": "guest_kernel", "guest_image_spec": "guest_image"}

# What a trial in guests records of the boot that served it (null on the bare host).
GUEST_FIELDS: list[pa.Field] = [
    pa.field("boot_id", pa.string()),
    pa.field("boot_s", pa.float64()),
    pa.field("guest_kernel", pa.string()),
    pa.field("guest_image", pa.string()),
    pa.field("guest_image_digest", pa.string()),
    pa.field("guest_vcpus", pa.int32()),
    pa.field("guest_pins", pa.string()),
    pa.field("guest_cmdline", pa.string()),
    pa.field("guest_facts_json", pa.string()),
    # the guest kernel (schema 6): a recipe build, and what the guest said about itself
    pa.field("kernel_recipe", pa.string()),
    pa.field("kernel_build", pa.string()),
    pa.field("kernel_release", pa.string()),
    pa.field("kernel_config_digest", pa.string()),
    pa.field("guest_uname", pa.string()),
    pa.field("guest_pvspin", pa.string()),
    pa.field("window_start", pa.timestamp("us", tz="UTC")),
    pa.field("window_end", pa.timestamp("us", tz="UTC")),
]

TRIAL_FIELDS: list[pa.Field] = [
    *ATTEMPT_FIELDS,
    pa.field("status", pa.string(), nullable=False),  # ok | failed | timeout
    pa.field("error", pa.string()),
    pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("ended_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("wall_s", pa.float64(), nullable=False),  # whole attempt as the runner saw it
    pa.field("workload_wall_s", pa.float64()),  # the workload command alone
    pa.field("params_json", pa.string(), nullable=False),  # all parameters, canonical JSON
    pa.field("guest_json", pa.string()),  # normalized guest description (env != host), canonical JSON
    *GUEST_FIELDS,
]

RESERVED = frozenset(f.name for f in METRIC_FIELDS + TRIAL_FIELDS) | {PARTITION_COLUMN}

AXIS_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}

# Data dictionary: meaning of every fixed column (the dataset card and `runner dataset` use it).
DICTIONARY: dict[str, str] = {
    "campaign": "campaign name (directory under datasets/)",
    "trial_id": "content-derived id of the trial: hash of its normalized parameters and repetition",
    "cell_id": "content-derived id of the matrix cell (parameters without repetition)",
    "repetition": "repetition number within the cell, from 1",
    "attempt": "attempt number of the trial, from 1 (retries increase it)",
    "host": "inventory name of the host the trial ran on",
    "env": "environment: host, container, kvm, xen-hvm, xen-pvh, xen-pv",
    "accel": "accelerator actually used: none (bare host or container), kvm, tcg, xen",
    "role": "trial for a repetition of the cell (a trial of the matrix); canary for a re-run of the matrix's canary cell "
            "(drift watch), kept out of the cell's statistics (null in datasets before schema version 6: a trial)",
    "metric": "metric name, e.g. throughput",
    "value": "measured value, a double; for a metric whose unit is `bool` (lockbench's stopped_early) 1 is true and 0 false",
    "unit": "unit of value, e.g. ops/s; `bool` for a yes/no metric (value 1 or 0)",
    "higher_is_better": "true if a larger value is better, false if smaller is better, null if neutral",
    "thread": "index (0, 1, ...) of the workload thread a per-thread row belongs to; null on the trial's totals. "
              "Not the thread count: that is the axis `threads`",
    "vm": "index (0, 1, ...) of the guest a per-guest row belongs to (over-commit); null on the trial's totals. "
          "Not the guest count: that is the axis `vms`",
    "probe": "the probe that read the row (perf_stat, lock_stat, kvm_exits, schedstat, cpufreq), null for the workload's own results",
    "side": "where the probe read: host (the trial's host or a guest's hypervisor host) or guest; null without a probe",
    "status": "ok, failed or timeout",
    "error": "why the attempt failed (one line), null if ok",
    "started_at": "UTC start of the attempt",
    "ended_at": "UTC end of the attempt",
    "wall_s": "wall time of the attempt seen by the runner, seconds",
    "workload_wall_s": "wall time of the workload command alone, seconds",
    "params_json": "all trial parameters as canonical JSON",
    "guest_json": "normalized guest description as canonical JSON (null on the bare host)",
    "workload": "workload plugin name (hive partition column)",
    "boot_id": "the guest boot that served the trial (same id: same running guests, reused)",
    "boot_s": "seconds from starting the guests to all answering SSH, on the first trial of a boot only",
    "guest_kernel": "guest kernel catalog name",
    "kernel_recipe": "the guest_kernels recipe the guests booted (null: a kernel not built by the runner)",
    "kernel_build": "build digest of that kernel (source, patches and final .config); its .config is kernels/<kernel_build>.config in the dataset",
    "kernel_release": "release of the recipe kernel as built (make kernelrelease)",
    "kernel_config_digest": "sha256 (16 hex) of the recipe kernel's final .config",
    "guest_uname": "uname -r inside the first guest",
    "guest_pvspin": "the guest kernel's boot line about paravirtual spinlocks (KVM: PV spinlocks enabled/disabled, ...; Xen: xen: PV spinlocks ...); 'no PV spinlock code in this kernel (...)' if it printed none and its /proc/kallsyms has no PV slow path; else null",
    "guest_image": "guest image catalog name (minimal, debian or the matrix's guest_images); the provenance's guest_images lists its packages",
    "guest_image_digest": "content address of the guest image the guests (or containers) ran (disk or root filesystem digest)",
    "guest_vcpus": "vCPUs of each guest (cpuset size of a container)",
    "guest_pins": "host CPUs of each vCPU as JSON ([[2], [3]]; [] when unpinned)",
    "guest_cmdline": "guest kernel command line the runner gave",
    "guest_facts_json": "what each guest reported at boot: uname -r, /proc/cmdline, online CPUs, clocksource, paravirtual features, pinning read back from the hypervisor",
    "window_start": "UTC start of the window all guests measured in (latest start)",
    "window_end": "UTC end of that window (earliest end)",
}


# Units and directions of the fixed columns that have one (the metrics' own are in their rows).
UNITS = {"wall_s": "s", "workload_wall_s": "s", "boot_s": "s", "started_at": "UTC time", "ended_at": "UTC time",
         "window_start": "UTC time", "window_end": "UTC time", "value": "given by `unit`"}
DIRECTION = {"value": "given by `higher_is_better`", "wall_s": "lower is better", "workload_wall_s": "lower is better"}
AXIS_TYPE_NAMES = {"int": "integer", "float": "number", "str": "text", "bool": "boolean"}


def axis_meaning(name: str, kind: str) -> str:
    """The meaning of a matrix axis column."""
    return (f"matrix axis `{name}` ({AXIS_TYPE_NAMES.get(kind, kind)}): the value of this parameter in the trial; "
            "every row of a trial carries it")


def axis_fields(axis_types: Mapping[str, str]) -> list[pa.Field]:
    return [pa.field(name, AXIS_TYPES[t]) for name, t in sorted(axis_types.items())]


def describe(field: pa.Field, meaning: str) -> pa.Field:
    """`field` with its meaning as Arrow field metadata `description`."""
    return field.with_metadata({b"description": meaning.encode()})


def _described_schema(fields: list[pa.Field], axis_types: Mapping[str, str]) -> pa.Schema:
    meaning = {**DICTIONARY, **{name: axis_meaning(name, kind) for name, kind in axis_types.items()}}
    fields = [describe(f, meaning[f.name]) for f in fields + axis_fields(axis_types)]
    metadata = {b"runner_schema_version": str(SCHEMA_VERSION).encode(),
                **{f"description:{f.name}".encode(): meaning[f.name].encode() for f in fields}}
    return pa.schema(fields, metadata=metadata)


def metrics_schema(axis_types: Mapping[str, str]) -> pa.Schema:
    """The metrics table of a dataset with these axes; every field says what it means (schema version 6)."""
    return _described_schema(METRIC_FIELDS, axis_types)


def trials_schema(axis_types: Mapping[str, str]) -> pa.Schema:
    """The trials table of a dataset with these axes; every field says what it means (schema version 6)."""
    return _described_schema(TRIAL_FIELDS, axis_types)


def upgrade(table: pa.Table) -> pa.Table:
    """A table read from a dataset of any readable version, as version 6 has it: a null `role` (a trial of the
    matrix before version 6) is `trial`."""
    if "role" not in table.column_names or table.num_rows == 0 or table.column("role").null_count == 0:
        return table
    i = table.column_names.index("role")
    return table.set_column(i, table.schema.field(i), pc.fill_null(table.column("role"), TRIAL_ROLE))


def ordinary_role(role: Any) -> Any:
    """Mask of the rows of a trial of the matrix, from a pandas `role` column of any schema version (null before
    version 6, `trial` since): a canary run is neither."""
    return (role.isna() | (role == TRIAL_ROLE)).to_numpy(dtype=bool)


def data_dictionary(axis_types: Mapping[str, str], schema_version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The data dictionary of a dataset with these axes (schema.json): every column of both tables with its type,
    nullability, meaning, unit and direction. Pure; runner.records.share adds the metrics an archive holds."""

    def columns(fields: list[pa.Field]) -> list[dict[str, Any]]:
        out = [{"name": f.name, "type": str(f.type), "nullable": f.nullable, "meaning": DICTIONARY[f.name],
                "unit": UNITS.get(f.name), "direction": DIRECTION.get(f.name)} for f in fields]
        out.append({"name": PARTITION_COLUMN, "type": "string", "nullable": False, "meaning": DICTIONARY[PARTITION_COLUMN],
                    "unit": None, "direction": None})
        out += [{"name": name, "type": kind, "nullable": True, "meaning": axis_meaning(name, kind), "unit": None,
                 "direction": None} for name, kind in sorted(axis_types.items())]
        return out

    return {"schema_version": schema_version, "tables": {"metrics": columns(METRIC_FIELDS), "trials": columns(TRIAL_FIELDS)}}


def data_card_columns(dictionary: Mapping[str, Any]) -> str:
    """The columns of a data dictionary as Markdown tables, one per table (DATA-CARD.md)."""
    lines = []
    for table, cols in dictionary["tables"].items():
        lines += [f"### `{table}`", "", "| column | type | meaning | unit | direction |", "|---|---|---|---|---|"]
        lines += [f"| `{c['name']}` | {c['type']} | {c['meaning'].replace('|', '/')} | {c['unit'] or ''} | {c['direction'] or ''} |"
                  for c in cols]
        lines.append("")
    return "\n".join(lines)
