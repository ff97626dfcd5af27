"""The report page's pieces (runner.analysis.report and its sections): the CSS, tables, hints and warnings in
HTML, numbers and fitted coefficients for people, the columns worth naming in a row's label, and `Page`, what a
section of the report adds its HTML, warnings and figures to.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from runner.analysis.axes import shown
from runner.analysis.collapse import Collapse
from runner.analysis.fmt import fitted, number


class Page(Protocol):
    """What a section of the report adds to (runner.analysis.report._Report): the report directory, its sections
    and warnings, the collapses the scaling sections found, and figures drawn within the report's budget."""

    out_dir: Path
    sections: list[str]
    warnings: list[str]
    collapses: list[tuple[dict[str, Any], Collapse, str]]  # (slice parameters, its collapse, label)

    def figure(self, name: str, draw: Any, **kwargs: Any) -> str: ...


_CSS = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;
vertical-align:top;overflow-wrap:anywhere}th{background:#eee}td:first-child,th:first-child{text-align:left}
.tbl{max-width:100%;overflow-x:auto}.facts td,.facts th{text-align:left;max-width:40em}.facts tr.differ td{background:#fff3cd}
.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:4px 8px;margin:4px 0}.hint{color:#555;font-style:italic}
.poor{color:#a00}.tcg{color:#a00;font-weight:bold}img{max-width:100%;height:auto}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}h2{border-bottom:1px solid #ccc}
code{background:#f3f3f3;padding:0 3px}"""

NO_ACCEL = {"none", "", None}


def _fmt(v: Any) -> str:
    """A table cell for people: yes/no for booleans, blank for unknown, numbers as runner.analysis.fmt."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    return number(v)


def _ci(v: float, ci: tuple[float, float]) -> str:
    """A fitted coefficient and its interval, for people (a fitted 0 is 0, never 4.941e-324)."""
    if any(map(math.isnan, ci)):
        return fitted(v)
    return f"{fitted(v)} [{fitted(ci[0])}, {fitted(ci[1])}]"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: Sequence[bool] = ()) -> str:
    """HTML table; cells are escaped unless their column is marked raw (already HTML)."""
    out = ['<div class="tbl"><table><tr>' + "".join(f"<th>{html.escape(shown(h))}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = [c if i < len(raw) and raw[i] else html.escape(_fmt(c)) for i, c in enumerate(r)]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _hint(text: str) -> str:
    """One line saying what the matrix needs for a section the campaign has no data for (HTML allowed)."""
    return f'<p class="hint">{text}</p>'


def _warn(text: str) -> str:
    return f'<div class="warn">{html.escape(text)}</div>'


def _label_columns(tot: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """Columns worth naming in labels: those that vary, plus accel whenever a real accelerator appears."""
    out = [c for c in cols if tot[c].nunique(dropna=False) > 1]
    if "accel" in tot.columns and "accel" not in out and not set(tot["accel"].dropna().unique()) <= NO_ACCEL:
        out.append("accel")
    return out
