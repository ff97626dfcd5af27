"""Analysis of campaign results: statistics per cell, scaling-law fits, collapse, over-commit, comparisons, reports.

Everything here is a pure function over pandas DataFrames (polars DataFrames are accepted and converted with
.to_pandas()), except `build_report` and `write_compare_html`, which write files. Notebook use:

    from runner.records.store import read_campaign
    from runner import analysis
    metrics, trials, prov = read_campaign("datasets/locks-2026")
    analysis.summary_table(metrics)
    analysis.usl_table(metrics, metric="throughput")           # one USL fit per slice along threads
    analysis.fit_usl([1, 2, 4, 8], [1.0, 1.9, 3.4, 5.1]).peak_n
    analysis.build_report(metrics, trials, prov, "out/")

See docs/analysis.md.
"""

from runner.analysis.collapse import Collapse, collapse_table, detect_collapse
from runner.analysis.compare import compare, compare_variants
from runner.analysis.overcommit import overcommit_table
from runner.analysis.report import build_report, summary_table, write_compare_html
from runner.analysis.stats import (
    as_pandas,
    bootstrap_ci,
    cell_stats,
    repetitions_needed,
    scaling_axis,
    totals,
)
from runner.analysis.usl import UslFit, fit_amdahl, fit_usl, usl_curve, usl_table
from runner.fairness import jain as jain_index  # the one Jain's index (all-zero shares: 1), shared with the workloads

__all__ = [
    "Collapse", "UslFit", "as_pandas", "bootstrap_ci", "build_report", "cell_stats", "collapse_table", "compare",
    "compare_variants", "detect_collapse", "fit_amdahl", "fit_usl", "jain_index", "overcommit_table",
    "repetitions_needed", "scaling_axis", "summary_table", "totals", "usl_curve", "usl_table", "write_compare_html",
]
