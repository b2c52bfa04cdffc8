"""Tasks, data loading, batching and metrics.

The GLUE task table and custom tasks (:mod:`.tasks`), reading the user's files (:mod:`.rows`), splits from files,
a folder or the hub under the ``dev`` or ``paper`` protocol (:mod:`.loading`), tokenisation and dynamic padding
for the three formats (:mod:`.collate`), and each task's metric (:mod:`.metrics`).
"""

from .collate import Collator, eval_batches, make_collator, restore_order, sort_for_eval
from .loading import PROTOCOLS, Splits, load_splits
from .metrics import compute_metrics, glue_average
from .rows import read_rows
from .tasks import (
    TASKS,
    TaskSpec,
    get_task,
    make_custom_spec,
    parse_prediction,
    spec_from_dict,
    spec_to_dict,
)

__all__ = [
    "PROTOCOLS",
    "TASKS",
    "Collator",
    "Splits",
    "TaskSpec",
    "compute_metrics",
    "eval_batches",
    "get_task",
    "glue_average",
    "load_splits",
    "make_collator",
    "make_custom_spec",
    "parse_prediction",
    "read_rows",
    "restore_order",
    "sort_for_eval",
    "spec_from_dict",
    "spec_to_dict",
]
