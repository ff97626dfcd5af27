"""What an archive says about itself for people and programs: DATA-CARD.md (what was measured, how, on what,
how to read and cite it) and schema.json (every column's type, meaning, unit and direction, and the metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from runner.records.schema import DICTIONARY, METRIC_FIELDS, TRIAL_FIELDS
from runner.textfile import Yaml12Loader

UNITS = {"wall_s": "s", "workload_wall_s": "s", "started_at": "UTC time", "ended_at": "UTC time", "value": "given by `unit`"}
DIRECTION = {"value": "given by `higher_is_better`", "wall_s": "lower is better", "workload_wall_s": "lower is better"}
CITATION = (
    "Kashyap, Min, Kim. Scalability in the Clouds! A Myth or Reality? APSys 2015.\n"
    "Kashyap, Min, Kim. Opportunistic Spinlocks: Achieving Virtual Machine Scalability in the Clouds. "
    "SIGOPS OSR 50(1), 2016."
)


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
    matrix = yaml.load(matrix_text, Loader=Yaml12Loader) or {}  # noqa: S506 - the matrix's own loader: a description `no` stays text
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
