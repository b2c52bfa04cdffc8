"""``laddertune train --method qlora``: PEFT LoRA r=16 on every linear layer of an nf4 backbone (bitsandbytes).

QLoRA needs bitsandbytes' 4-bit CUDA kernels, so it runs on CUDA only: :func:`require_qlora` refuses any other
device, or a missing bitsandbytes, with one line before anything loads. :func:`build_qlora` loads the backbone in
bfloat16 (as QLoRA's scripts do), moves it to the GPU, quantizes its linears with
:func:`laddertune.core.quantization.convert_backbone` (``"nf4"``: ``bnb.nn.Linear4bit``, double quantization,
bf16 compute; the LM head stays 16-bit) and prepares it with :func:`laddertune.baselines.prepare_qlora`
(``prepare_model_for_kbit_training`` with gradient checkpointing, LoRA alpha 32, dropout 0.05).
"""

from __future__ import annotations

import torch
from torch import nn

from ..baselines import BaselineConfig, prepare_qlora
from ..core.quantization import convert_backbone
from ..errors import ConfigError

QLORA = BaselineConfig(lora_rank=16, lora_alpha=32, lora_dropout=0.05)


def require_qlora(device: torch.device) -> None:
    """One-line ConfigError unless QLoRA can run here (a CUDA device and bitsandbytes)."""
    if torch.device(device).type != "cuda":
        raise ConfigError(
            f"--method qlora needs a CUDA GPU and bitsandbytes (4-bit kernels); the device is {device}. "
            "On CPU use --method lst --backbone-dtype nf4 or --method lora"
        )
    try:
        import bitsandbytes  # noqa: F401  (deferred: an optional dependency with CUDA kernels)
    except ImportError:
        raise ConfigError("--method qlora needs bitsandbytes: pip install bitsandbytes") from None


def build_qlora(backbone: nn.Module, device: torch.device) -> nn.Module:
    """The QLoRA model around a freshly loaded ``backbone`` (on the CPU), on ``device``."""
    require_qlora(device)
    backbone = backbone.to(torch.bfloat16).to(device)
    convert_backbone(backbone, "nf4")
    return prepare_qlora(backbone, QLORA, gradient_checkpointing=True)
