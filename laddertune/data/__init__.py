"""Tasks, data loading, batching and metrics.

The GLUE task table and custom tasks (:mod:`.tasks`), reading the user's files (:mod:`.rows`), splits from files,
a folder or the hub under the ``dev`` or ``paper`` protocol (:mod:`.loading`), tokenisation and dynamic padding
for the three formats (:mod:`.collate`), and each task's metric (:mod:`.metrics`).

Generative data: layouts detected from the columns (:mod:`.layouts`), chat templates and assistant spans
(:mod:`.chat`), tokenisation with loss masks (:mod:`.generative`) and truncation (:mod:`.truncation`), batching
(:mod:`.generative_collate`), packing (:mod:`.packing`) and generation metrics (:mod:`.generation_metrics`).
"""

from .chat import assistant_spans, has_chat_template, render_chat
from .collate import Collator, eval_batches, make_collator, restore_order, sort_for_eval
from .generation_metrics import compute_generation_metrics, normalize_answer, token_f1
from .generative import PROMPT_FORMATS, encode_causal, encode_seq2seq
from .generative_collate import GenerativeCollator
from .layouts import LAYOUTS, detect_layout, normalize_rows
from .loading import PROTOCOLS, Splits, load_splits
from .metrics import compute_metrics, glue_average
from .packing import block_causal_mask, pack_rows
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
from .truncation import IGNORE_INDEX, EncodeStats

__all__ = [
    "IGNORE_INDEX",
    "LAYOUTS",
    "PROMPT_FORMATS",
    "PROTOCOLS",
    "TASKS",
    "Collator",
    "EncodeStats",
    "GenerativeCollator",
    "Splits",
    "TaskSpec",
    "assistant_spans",
    "block_causal_mask",
    "compute_generation_metrics",
    "compute_metrics",
    "detect_layout",
    "encode_causal",
    "encode_seq2seq",
    "eval_batches",
    "get_task",
    "glue_average",
    "load_splits",
    "make_collator",
    "has_chat_template",
    "make_custom_spec",
    "normalize_answer",
    "normalize_rows",
    "pack_rows",
    "parse_prediction",
    "read_rows",
    "render_chat",
    "restore_order",
    "sort_for_eval",
    "spec_from_dict",
    "spec_to_dict",
    "token_f1",
]
