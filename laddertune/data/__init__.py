"""Tasks, data loading, batching and metrics.

The GLUE task table and custom tasks (:mod:`.tasks`), reading the user's files (:mod:`.rows`), splits from files,
a folder or the hub under the ``dev`` or ``paper`` protocol (:mod:`.loading`), tokenisation and dynamic padding
for the three formats (:mod:`.collate`), and each task's metric (:mod:`.metrics`).

Generative data: layouts detected from the columns (:mod:`.layouts`), chat templates and assistant spans
(:mod:`.chat`), tokenisation with loss masks (:mod:`.generative`) and truncation (:mod:`.truncation`), batching
(:mod:`.generative_collate`), packing (:mod:`.packing`) and generation metrics (:mod:`.generation_metrics`).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "assistant_spans": ".chat",
    "has_chat_template": ".chat",
    "render_chat": ".chat",
    "Collator": ".collate",
    "eval_batches": ".collate",
    "make_collator": ".collate",
    "restore_order": ".collate",
    "sort_for_eval": ".collate",
    "compute_generation_metrics": ".generation_metrics",
    "normalize_answer": ".generation_metrics",
    "token_f1": ".generation_metrics",
    "PROMPT_FORMATS": ".generative",
    "encode_causal": ".generative",
    "encode_seq2seq": ".generative",
    "GenerativeCollator": ".generative_collate",
    "LAYOUTS": ".layouts",
    "detect_layout": ".layouts",
    "normalize_rows": ".layouts",
    "PROTOCOLS": ".loading",
    "Splits": ".loading",
    "load_splits": ".loading",
    "compute_metrics": ".metrics",
    "glue_average": ".metrics",
    "block_causal_mask": ".packing",
    "pack_rows": ".packing",
    "read_rows": ".rows",
    "TASKS": ".tasks",
    "TaskSpec": ".tasks",
    "get_task": ".tasks",
    "make_custom_spec": ".tasks",
    "parse_prediction": ".tasks",
    "spec_from_dict": ".tasks",
    "spec_to_dict": ".tasks",
    "IGNORE_INDEX": ".truncation",
    "EncodeStats": ".truncation",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
