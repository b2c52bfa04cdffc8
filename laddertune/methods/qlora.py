"""QLoRA (Dettmers et al. 2023): PEFT LoRA on a 4-bit frozen backbone, prepared as PEFT prepares it.

QLoRA needs bitsandbytes' 4-bit CUDA kernels, so it runs on CUDA only: :meth:`QLoraMethod.require` refuses any other
device, or a missing bitsandbytes, with one line before anything loads. :meth:`QLoraMethod.build` loads the
backbone in bfloat16 (as QLoRA's scripts do), moves it to the GPU, quantizes its linears with
:func:`laddertune.core.quantization.convert_backbone` (``"nf4"``: ``bnb.nn.Linear4bit``, double quantization,
bf16 compute; the LM head stays 16-bit) and prepares it with :func:`prepare_qlora`.

:func:`prepare_qlora` expects a backbone whose ``nn.Linear`` layers (the LM head aside) are already 4-bit:
bitsandbytes' ``Linear4bit`` in training or the memory predictor's emulation of it. Then, as QLoRA's scripts do:

1. ``peft.prepare_model_for_kbit_training``: freeze everything, cast every remaining 16-bit parameter (embeddings,
   norms, LM head) to float32, and, unless ``gradient_checkpointing=False``, switch on the backbone's gradient
   checkpointing (reentrant, PEFT's default, with the input embeddings' outputs requiring grad);
2. ``peft.get_peft_model`` with LoRA on every linear layer (``"all-linear"``: QLoRA's choice) unless
   ``lora_targets`` names others; the adapters are float32.
"""

from __future__ import annotations

import torch
from torch import nn

from ..baselines import QLoraOptions, get_peft_model, peft_task_type
from ..core.quantization import convert_backbone
from ..errors import ConfigError
from .base import TrainingMethod


def prepare_qlora(backbone: nn.Module, options: QLoraOptions) -> nn.Module:
    """The QLoRA model around a 4-bit ``backbone`` (modified in place); see the module docstring."""
    from peft import LoraConfig, prepare_model_for_kbit_training

    backbone.is_loaded_in_4bit = True  # what transformers sets when it loads in 4 bits; PEFT reads it
    backbone = prepare_model_for_kbit_training(
        backbone, use_gradient_checkpointing=options.gradient_checkpointing
    )
    lora_config = LoraConfig(
        task_type=peft_task_type(backbone),
        r=options.lora_rank,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=list(options.lora_targets) if options.lora_targets else "all-linear",
    )
    try:
        return get_peft_model(backbone, lora_config)
    except ValueError as e:
        raise ConfigError(f"QLoRA does not fit this backbone: {e}") from None


class QLoraMethod(TrainingMethod):
    """``qlora``: options :class:`~laddertune.baselines.QLoraOptions` (rank 16, alpha 32, dropout 0.05)."""

    def require(self, device: torch.device) -> None:
        if torch.device(device).type != "cuda":
            raise ConfigError(
                f"--method qlora needs a CUDA GPU and bitsandbytes (4-bit kernels); the device is {device}. "
                "On CPU use --method lst --backbone-dtype nf4 or --method lora"
            )
        try:
            import bitsandbytes  # noqa: F401  (deferred: an optional dependency with CUDA kernels)
        except ImportError:
            raise ConfigError("--method qlora needs bitsandbytes: pip install bitsandbytes") from None

    def build(self, backbone: nn.Module, options: QLoraOptions, *, device, calibration=None) -> nn.Module:
        self.require(device)
        backbone = backbone.to(torch.bfloat16).to(device)  # loaded on the CPU, cast to bf16, moved, quantized
        convert_backbone(backbone, "nf4")
        return prepare_qlora(backbone, options)

    def build_for_trace(self, backbone: nn.Module, options: QLoraOptions, quantize) -> nn.Module:
        quantize(backbone, "nf4")
        return prepare_qlora(backbone, options)

    def compute_settings(self, options: QLoraOptions) -> dict:
        return {"backbone_dtype": "nf4", "attn": None, "side_checkpointing": False}

    def trace_settings(self, options: QLoraOptions, model: nn.Module) -> dict:
        settings = options.to_dict()
        settings["lora_targets"] = settings["lora_targets"] or "all-linear"
        return settings
