"""The paper's baselines on the same backbone: full fine-tuning, LoRA, Adapters, BitFit and prompt tuning.

PEFT provides LoRA and prompt tuning; Adapters (Houlsby-style bottlenecks after each sub-layer) and BitFit are
small enough to write here. :func:`prepare_baseline` returns the backbone with only the method's parameters
trainable, so the training loop treats every method alike; each method's options are a dataclass of
:mod:`.options`.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "add_adapters": ".adapters",
    "BASELINES": ".methods",
    "FAMILIES": ".methods",
    "count_trainable": ".methods",
    "get_peft_model": ".methods",
    "peft_task_type": ".methods",
    "prepare_baseline": ".methods",
    "BASELINE_OPTIONS": ".options",
    "AdapterOptions": ".options",
    "BitFitOptions": ".options",
    "FullOptions": ".options",
    "LoraOptions": ".options",
    "PromptOptions": ".options",
    "QLoraOptions": ".options",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
