"""Reports of finished runs: rows read from run folders or results files, markdown tables and PNG figures.

Reads only what ``laddertune train`` and ``benchmarks/suite.py`` wrote (JSON); it imports nothing of the training
layers, so a report can be drawn anywhere the results files are.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "REQUIRED": ".rows",
    "Row": ".rows",
    "load_rows": ".rows",
    "read_curve": ".rows",
    "Group": ".summary",
    "Stat": ".summary",
    "stat": ".summary",
    "summarize": ".summary",
    "LAYOUTS": ".tables",
    "markdown": ".tables",
    "write_report": ".write",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
