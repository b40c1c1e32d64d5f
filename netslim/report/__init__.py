"""Human-facing output of a pruning run: the before/after table and the report plot."""

from netslim.report.plot import write_plot
from netslim.report.table import before_after_table, time_target_lines

__all__ = ["before_after_table", "time_target_lines", "write_plot"]
