"""QLoRA (Dettmers et al. 2023): PEFT LoRA on a 4-bit frozen backbone, prepared as PEFT prepares it.

``prepare_qlora(backbone, config)`` expects a backbone whose ``nn.Linear`` layers (the LM head aside) are already
4-bit: bitsandbytes' ``Linear4bit`` in training (:func:`laddertune.core.quantization.convert_backbone` with
``"nf4"`` on CUDA) or the memory predictor's emulation of it. Then, as QLoRA's scripts do:

1. ``peft.prepare_model_for_kbit_training``: freeze everything, cast every remaining 16-bit parameter (embeddings,
   norms, LM head) to float32, and, unless ``gradient_checkpointing=False``, switch on the backbone's gradient
   checkpointing (reentrant, PEFT's default, with the input embeddings' outputs requiring grad);
2. ``peft.get_peft_model`` with LoRA on every linear layer (``"all-linear"``: QLoRA's choice) unless
   ``config.lora_targets`` names others; the adapters are float32.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .methods import BaselineConfig, _task_type


def prepare_qlora(
    backbone: nn.Module, config: BaselineConfig, *, gradient_checkpointing: bool = True
) -> nn.Module:
    """The QLoRA model around a 4-bit ``backbone`` (modified in place); see the module docstring."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    backbone.is_loaded_in_4bit = True  # what transformers sets when it loads in 4 bits; PEFT reads it
    backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=gradient_checkpointing)
    lora_config = LoraConfig(
        task_type=_task_type(backbone),
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets) if config.lora_targets else "all-linear",
    )
    try:
        return get_peft_model(backbone, lora_config)
    except ValueError as e:
        raise ConfigError(f"QLoRA does not fit this backbone: {e}") from None
