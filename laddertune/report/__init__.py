"""Reports of finished runs: rows read from run folders or results files, markdown tables and PNG figures.

Reads only what ``laddertune train`` and ``benchmarks/suite.py`` wrote (JSON); it imports nothing of the training
layers, so a report can be drawn anywhere the results files are.
"""

from .rows import REQUIRED, Row, load_rows, read_curve
from .summary import Group, Stat, stat, summarize
from .tables import LAYOUTS, markdown
from .write import write_report

__all__ = [
    "LAYOUTS",
    "REQUIRED",
    "Group",
    "Row",
    "Stat",
    "load_rows",
    "markdown",
    "read_curve",
    "stat",
    "summarize",
    "write_report",
]
