"""Tasks, data loading, batching and metrics.

The GLUE task table and custom tasks (:mod:`.tasks`), reading the user's files (:mod:`.rows`), splits from files,
a folder or the hub under the ``dev`` or ``paper`` protocol (:mod:`.loading`), tokenisation and dynamic padding
for the three formats (:mod:`.collate`), and each task's metric (:mod:`.metrics`).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "Collator": ".collate",
    "eval_batches": ".collate",
    "make_collator": ".collate",
    "restore_order": ".collate",
    "sort_for_eval": ".collate",
    "PROTOCOLS": ".loading",
    "Splits": ".loading",
    "load_splits": ".loading",
    "compute_metrics": ".metrics",
    "glue_average": ".metrics",
    "read_rows": ".rows",
    "TASKS": ".tasks",
    "TaskSpec": ".tasks",
    "get_task": ".tasks",
    "make_custom_spec": ".tasks",
    "parse_prediction": ".tasks",
    "spec_from_dict": ".tasks",
    "spec_to_dict": ".tasks",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
