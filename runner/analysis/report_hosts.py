"""The report's provenance section: the campaign's provenance fields, the environments and accelerators used,
the matrix, and the host facts for people (one row per fact, one column per host, differences first)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from runner.analysis.drift import FACT_KEYS, facts_differ, host_summary
from runner.analysis.findings import host_cpus, is_virtual
from runner.analysis.page import _fmt, _table


def _facts_differ(hosts: Iterable[str], facts: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(fact keys whose values differ between the hosts, hosts without facts): runner.analysis.drift.facts_differ,
    which reads the collector's nested facts as well as flat summaries."""
    return facts_differ(hosts, facts)


def _provenance_section(provenance: dict[str, Any], tot: pd.DataFrame) -> str:
    parts = ["<h2>Provenance</h2>"]
    skip = {"hosts", "matrix"}
    fields = [[k, v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)]
              for k, v in provenance.items() if k not in skip]
    parts.append(_table(["field", "value"], fields).replace('<div class="tbl"><table>', '<div class="tbl"><table class="facts">', 1))
    if {"env", "accel"} <= set(tot.columns):
        used = tot.groupby(["env", "accel"], dropna=False, observed=True).size().reset_index(name="rows")
        parts.append("<h3>Environments and accelerators actually used</h3>")
        parts.append(_table(["env", "accel", "result rows"], used.itertuples(index=False)))
    hosts = provenance.get("hosts") or {}
    if hosts:
        parts.append("<h3>Hosts</h3>")
        parts.append(_hosts_table({str(h): f for h, f in hosts.items()}))
    matrix = provenance.get("matrix")
    if matrix is not None:
        text = matrix if isinstance(matrix, str) else json.dumps(matrix, indent=2, default=str)
        parts.append("<h3>Matrix</h3><pre>" + html.escape(text) + "</pre>")
    return "\n".join(parts)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested facts as dotted keys ('cpu.model'); lists of plain values joined with ', '."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and all(not isinstance(v, (Mapping, list)) for v in value):
        return {prefix: ", ".join(map(str, value))}
    if isinstance(value, list):
        return {prefix: json.dumps(value, default=str)}
    return {prefix: value}


FACT_ROWS = 400  # fact rows shown per report; the rest are in the datasets' hosts/*.json


def _hosts_table(hosts: Mapping[str, Mapping[str, Any]]) -> str:
    """Host facts for people: one row per fact, one column per host. The summary facts that make hosts comparable
    (runner.analysis.drift.FACT_KEYS) come first, those that differ between hosts first of all and marked; the
    collector's full facts follow, folded (differences first again)."""
    names = sorted(hosts)
    summary = {h: {**host_summary(hosts[h]), "cpus": host_cpus(hosts[h]), "hypervisor": hosts[h].get("hypervisor"),
                   "virtual machine (its guests nested)": is_virtual(hosts[h])} for h in names}
    flat = {h: _flat(hosts[h]) for h in names}

    def differs(values: Sequence[Any]) -> bool:
        return len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1

    def rows(table: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> tuple[list[str], int]:
        keyed = [(k, [table[h].get(k) for h in names]) for k in keys]
        keyed = sorted(keyed, key=lambda kv: not differs(kv[1]))  # stable: differences first, then in order
        out = []
        for k, values in keyed[:FACT_ROWS]:
            cls = ' class="differ"' if differs(values) else ""
            out.append(f"<tr{cls}><td>{html.escape(k)}</td>" + "".join(
                f"<td>{html.escape(_fmt(v) if not isinstance(v, (list, dict)) else json.dumps(v, default=str))}</td>"
                for v in values) + "</tr>")
        return out, sum(differs(v) for _, v in keyed)

    head = "<tr><th>fact</th>" + "".join(f"<th>{html.escape(h)}</th>" for h in names) + "</tr>"
    present = [k for k in (*FACT_KEYS, "cpus", "hypervisor", "virtual machine (its guests nested)")
               if any(summary[h].get(k) is not None for h in names)]
    main, ndiff = rows(summary, present)
    keys = list(dict.fromkeys(k for h in names for k in flat[h]))
    full, fdiff = rows(flat, keys)
    said = (f"{ndiff} of these facts differ between the hosts (marked, first)." if len(names) > 1 and ndiff else
            "The hosts agree on these facts." if len(names) > 1 else "")
    more = f" First {FACT_ROWS} of {len(keys)}; all in the dataset's hosts/*.json." if len(keys) > FACT_ROWS else ""
    return (f"<p>{said}</p>" + '<div class="tbl"><table class="facts">' + head + "".join(main) + "</table></div>"
            + f"<details><summary>All facts the collector took ({len(keys)}"
            + (f", {fdiff} differ" if len(names) > 1 else "") + ")</summary>"
            + '<div class="tbl"><table class="facts">' + head + "".join(full) + f"</table></div>{more}</details>")
