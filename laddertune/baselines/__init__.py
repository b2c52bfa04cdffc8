"""The paper's baselines on the same backbone: full fine-tuning, LoRA, Adapters, BitFit and prompt tuning.

PEFT provides LoRA and prompt tuning; Adapters (Houlsby-style bottlenecks after each sub-layer) and BitFit are
small enough to write here. :func:`prepare_baseline` returns the backbone with only the method's parameters
trainable, so the training loop treats every method alike.
"""

from .adapters import add_adapters
from .methods import BASELINES, FAMILIES, METHODS, BaselineConfig, count_trainable, prepare_baseline
from .qlora import prepare_qlora

__all__ = [
    "BASELINES",
    "FAMILIES",
    "METHODS",
    "BaselineConfig",
    "add_adapters",
    "count_trainable",
    "prepare_baseline",
    "prepare_qlora",
]
