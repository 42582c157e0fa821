"""The HTML report of a run directory: one section per stage, figures with their n, control and CI.

    from rewardscope.report import write_report, summary_table
    path = write_report(run_dir)        # run_dir/report.html (self-contained) + run_dir/report/figures/*.png
    print(summary_table(run_dir))       # the headline figures as plain text

SECTIONS maps a stage name to `section(run_dir) -> Section | None` (None when the stage's artifacts are
absent); write_report renders them in this order. A later stage adds its part of the report by adding its
function: `SECTIONS["ablation"] = my_section` (see docs/report.md).
"""

from __future__ import annotations

from typing import Callable

from rewardscope.report import ablate as _ablate
from rewardscope.report import probe as _probe
from rewardscope.report import rollout as _rollout
from rewardscope.report import transfer as _transfer
from rewardscope.report.core import Figure, Html, Section, Table, table_html
from rewardscope.report.render import figures_dir, write_report
from rewardscope.report.summary import summary_table

SECTIONS: dict[str, Callable] = {
    "rollout": _rollout.section,
    "probe": _probe.section,
    "transfer": _transfer.section,
    "ablate": _ablate.section,
}

__all__ = ["SECTIONS", "Figure", "Html", "Section", "Table", "figures_dir", "summary_table", "table_html",
           "write_report"]
