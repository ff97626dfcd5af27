"""`runner dataset query`: DuckDB over every campaign of a datasets directory, read-only and bounded.

Views `metrics` and `trials` read the campaigns' Parquet files (hive partitioning, union by name); the
connection can read nothing else and write nothing, and only SELECT statements run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import BadDatasetError, UsageError
from runner.util import one_line


def campaigns(datasets: Path) -> list[Path]:
    datasets = Path(datasets)
    return sorted(p.parent for p in datasets.glob("*/dataset.json") if not p.parent.name.startswith(".")) if datasets.exists() else []


def connect_views(datasets: Path) -> Any:
    """A DuckDB connection with views `metrics` and `trials` over every campaign under `datasets`; column
    `dataset` names the campaign directory (kept-apart imports differ from `campaign` there). The connection
    reads those Parquet files and nothing else: no other file, no write, no setting changed (DuckDB's own
    allowed_paths, enable_external_access=false and lock_configuration)."""
    roots = campaigns(datasets)
    if not roots:  # as for `runner status` or `report` without a campaign: bad input (exit 2)
        raise UsageError(f"no campaign in {datasets}/; run `runner launch` or `runner dataset import` first, or name the "
                         "datasets directory (--datasets, env RUNNER_DATASETS)")
    import duckdb  # 0.2 s of imports, for queries only (the CLI imports this module for every command)

    con = duckdb.connect()
    read: list[str] = []
    for table in ("metrics", "trials"):
        files = [str(p) for root in roots for p in (root / table).glob("workload=*/*.parquet")]
        if not files:
            con.close()
            raise BadDatasetError(f"no {table} files in any campaign under {datasets}/ (no trial has finished yet?)")
        read += files
        listing = _sql_list(files)
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
    con.execute(f"SET allowed_paths = {_sql_list([str(Path(f).resolve()) for f in read] + read)}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in items) + "]"


DEFAULT_LIMIT = 1000  # rows `runner dataset query` prints unless told (--limit)


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    left_out: int = 0  # rows past the limit, counted, not kept


def run_query(sql: str, datasets: Path, *, limit: int | None = DEFAULT_LIMIT) -> QueryResult:
    """Run `sql`, one or more SELECT statements, over the views (connect_views); the last one's rows, at most
    `limit` of them (None: all), and how many more there were. Any statement other than a SELECT (CREATE,
    COPY, SET, ATTACH, ...) is refused before anything runs: a query reads, it never writes."""
    if not sql.strip():
        raise UsageError("empty query; give SQL over the views `metrics` and `trials`, e.g. \"SELECT count(*) FROM metrics\"")
    if limit is not None and limit < 0:
        raise UsageError(f"--limit {limit}: give a number of rows, 0 or more")
    import duckdb  # 0.2 s of imports, for queries only (the CLI imports this module for every command)

    con = connect_views(datasets)
    try:
        statements = con.extract_statements(sql)
        for st in statements:
            if st.type != duckdb.StatementType.SELECT:
                kind = st.type.name.replace("_STATEMENT", "")
                raise UsageError(f"query refused: a {kind} statement; `runner dataset query` only reads: give SELECT "
                                 "statements over the views `metrics` and `trials`")
        if not statements:
            raise UsageError("empty query; give SQL over the views `metrics` and `trials`, e.g. \"SELECT count(*) FROM metrics\"")
        for st in statements[:-1]:
            con.execute(st)
        cur = con.execute(statements[-1])
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall() if limit is None else cur.fetchmany(limit) if limit else []
        left_out = 0
        while limit is not None and (more := cur.fetchmany(10_000)):
            left_out += len(more)
        return QueryResult(columns, rows, left_out)
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {one_line(exc, limit=10_000)}") from None
    finally:
        con.close()


def query(sql: str, datasets: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run `sql` (SELECT statements) over the views; returns (column names, every row)."""
    result = run_query(sql, datasets, limit=None)
    return result.columns, result.rows
