"""The HTML page of a comparison (`runner compare --html`): verdicts, warnings, a figure of every cell's change
with its interval, and the table, in percent as the terminal shows it. The one file it writes is the page; the
figure is embedded (SVG), so the page can be mailed or attached to a CI run on its own."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from runner.analysis.comparison import BETTER, WORSE, cell_keys, counts, percent

CSS = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}.warn{background:#fff3cd;border-left:4px solid #e0a800;
padding:4px 8px;margin:4px 0}.worse{color:#a00;font-weight:bold}.better{color:#070;font-weight:bold}svg{max-width:100%;height:auto}"""

COLORS = {WORSE: "#c0392b", BETTER: "#1e8449"}
MAX_FIGURE_CELLS = 60  # more than this many cells make an unreadable figure: the table has them all


def cell_label(row: pd.Series, keys: Sequence[str]) -> str:
    """A cell's parameters in words: 'throughput lock=ticket threads=4' (pure)."""
    return " ".join([str(row["metric"]), *(f"{k}={row[k]}" for k in keys if k in row and pd.notna(row[k]))])


def varying_keys(result: pd.DataFrame) -> list[str]:
    """The parameter columns whose value differs between the cells (the others say nothing about a cell)."""
    return [c for c in cell_keys(result) if c not in ("metric", "campaign") and result[c].nunique(dropna=False) > 1]


def change_figure(result: pd.DataFrame) -> str:
    """SVG: every cell's change in percent with its 95% interval (matplotlib errorbar), worse in red, better in
    green, the rest grey; at most MAX_FIGURE_CELLS cells (the first ones, worst first)."""
    from matplotlib.figure import Figure  # 0.4 s of imports, for --html only (`runner compare` uses the rest)

    rows = result.head(MAX_FIGURE_CELLS).iloc[::-1]
    keys = varying_keys(result)
    fig = Figure(figsize=(8, 1.2 + 0.28 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    for y, (_, r) in enumerate(rows.iterrows()):
        mid = 100 * r["change"]
        lo, hi = 100 * r["change_low"], 100 * r["change_high"]
        err = [[max(0.0, mid - lo)], [max(0.0, hi - mid)]] if pd.notna(lo) and pd.notna(hi) else None
        ax.errorbar([mid], [y], xerr=err, fmt="o", color=COLORS.get(r["verdict"], "#888"), capsize=3, markersize=4)
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [cell_label(r, keys) for _, r in rows.iterrows()], fontsize=8)
    ax.set_xlabel("change of the median, B against A (%), with its 95% interval")
    ax.grid(axis="x", alpha=0.3)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def write_compare_html(result: pd.DataFrame, path: Path | str, *, title: str, q: float = 0.05,
                       warnings: Sequence[str] = ()) -> Path:
    """Write the table returned by runner.analysis.compare as an HTML page with its figure, after the `warnings`
    (comparability: parameters, versions, host facts or host state that differ)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = ", ".join(f"{n} {v}" for v, n in counts(result).items())
    keys = varying_keys(result)
    header = ["cell", "n A/B", "median A", "median B", "change", "95% interval", "q", "verdict", "why"]
    body = []
    for _, r in result.iterrows():
        unit = f" {r['unit']}" if "unit" in r and r["unit"] else ""
        cells = [cell_label(r, keys), f"{r['n_a']}/{r['n_b']}", f"{r['median_a']:.4g}{unit}", f"{r['median_b']:.4g}{unit}",
                 percent(r["change"]), f"[{percent(r['change_low'])}, {percent(r['change_high'])}]",
                 "" if pd.isna(r["q"]) else f"{r['q']:.2g}", r["verdict"], r["why"]]
        tds = "".join(f'<td class="{r["verdict"]}">{html.escape(str(c))}</td>' if i == 7 else f"<td>{html.escape(str(c))}</td>"
                      for i, c in enumerate(cells))
        body.append(f"<tr>{tds}</tr>")
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(body) + "</table>"
    shown = min(len(result), MAX_FIGURE_CELLS)
    doc = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(summary)}. Change is median(B) / median(A) - 1 in percent, with a 95% bootstrap interval; "
        f"Mann-Whitney U per cell, Benjamini-Hochberg q-values; a cell is better or worse when q &le; {q:g} and the "
        "interval excludes 0; <em>too few</em> when its repetitions cannot show a difference at all.</p>",
        "".join(f'<div class="warn">{html.escape(w)}</div>' for w in warnings),
        f"<h2>Change per cell</h2><figure>{change_figure(result)}<figcaption>"
        f"{shown} of {len(result)} cells, in the table's order.</figcaption></figure>",
        "<h2>Cells</h2>", table, "</body></html>",
    ])
    path.write_text(doc, encoding="utf-8")
    return path

