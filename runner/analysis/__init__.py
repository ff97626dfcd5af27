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

import importlib
from typing import Any

from runner.fairness import jain as jain_index  # the one Jain's index (all-zero shares: 1), shared with the workloads

# Every other name is imported on first use (PEP 562), so `import runner.analysis.adaptive` from the campaign loop
# does not pull in scipy.stats and matplotlib (comparisons, the report, the plots): that cost every command
# seconds before it started (`runner launch` to its first trial). The comparisons live in `comparison`, not
# `compare`: importing a submodule sets the package attribute of its name, which would hide the function.
_WHERE = {
    "compare": "comparison", "compare_variants": "comparison",
    "Collapse": "collapse", "collapse_table": "collapse", "detect_collapse": "collapse",
    "overcommit_table": "overcommit",
    "build_report": "report", "summary_table": "report", "write_compare_html": "compare_page",
    "as_pandas": "stats", "bootstrap_ci": "stats", "cell_stats": "stats", "repetitions_needed": "stats",
    "scaling_axis": "stats", "totals": "stats",
    "UslFit": "usl", "fit_amdahl": "usl", "fit_usl": "usl", "usl_curve": "usl", "usl_table": "usl",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"runner.analysis.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'runner.analysis' has no attribute {name!r}")


__all__ = [
    "Collapse", "UslFit", "as_pandas", "bootstrap_ci", "build_report", "cell_stats", "collapse_table", "compare",
    "compare_variants", "detect_collapse", "fit_amdahl", "fit_usl", "jain_index", "overcommit_table",
    "repetitions_needed", "scaling_axis", "summary_table", "totals", "usl_curve", "usl_table", "write_compare_html",
]
