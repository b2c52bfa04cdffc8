"""Low-precision and quantized frozen backbones: ``LadderConfig.backbone_dtype``.

``float32`` / ``bfloat16`` / ``float16`` cast the frozen backbone. ``int8`` / ``nf4`` replace its ``nn.Linear``
layers (not the LM head, which the side network's logits go through and which is often tied to the embeddings)
with quantized ones from a maintained library, one small file per backend behind one interface (as PEFT's
``tuners/lora/bnb.py``): ``quantize_linears(backbone, scheme, skip)``.

- CUDA: bitsandbytes (:mod:`.bnb`), the library QLoRA and transformers' ``BitsAndBytesConfig`` use.
- CPU: torchao (:mod:`.torchao_cpu`). Why torchao and not the others (checked with torch 2.13 CPU): torchao
  0.18's ``Int8WeightOnlyConfig`` via ``quantize_`` and its ``NF4Tensor`` (torchtune's QLoRA weight) import and run
  on CPU; bitsandbytes' CPU backend is limited to some ops and builds; optimum-quanto's last release (0.2.7,
  2025-03) predates torch 2.13 and is in maintenance mode. bitsandbytes is also the CUDA choice because its
  kernels are the fast ones there; torchao's NF4 linear dequantizes per call.

Both libraries are optional: a missing one is a one-line :class:`~laddertune.errors.ConfigError` naming the pip
package. On CUDA everything else in the backbone (embeddings, norms, the LM head) is cast to bfloat16 first (as
transformers loads 4/8-bit models), so the hidden states and ladder taps are 16-bit; on CPU it keeps its dtype. GPT-2's ``Conv1D``
projections are not ``nn.Linear`` and stay unquantized.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from . import bnb, torchao_cpu

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZED = ("int8", "nf4")


def convert_backbone(backbone: nn.Module, dtype: str, embeddings: bool = False) -> nn.Module:
    """Cast (``float32``, ``bfloat16``, ``float16``) or quantize (``int8``, ``nf4``) a frozen backbone in place.

    The backbone's device decides the quantization backend (bitsandbytes on CUDA, torchao on CPU).
    ``embeddings``: quantize the LM head and the input embeddings too (bitsandbytes only; a plain ``nn.Embedding``).
    """
    if dtype in FLOAT_DTYPES:
        return backbone.to(FLOAT_DTYPES[dtype])
    if dtype not in QUANTIZED:
        raise ConfigError(
            f"backbone_dtype must be one of {', '.join([*FLOAT_DTYPES, *QUANTIZED])}; got {dtype!r}"
        )
    device = next(backbone.parameters()).device
    backend = bnb if device.type == "cuda" else torchao_cpu
    if embeddings and backend is not bnb:
        raise ConfigError("quantize_embeddings needs a CUDA backbone (bitsandbytes)")
    if backend is bnb:  # as transformers loads a 4/8-bit model: the rest (embeddings, norms, LM head) in the
        backbone.to(bnb.COMPUTE_DTYPE)  # compute dtype, so the hidden states and the taps are 16-bit too
    head = backbone.get_output_embeddings() if hasattr(backbone, "get_output_embeddings") else None
    skip = {id(head)} if head is not None and not embeddings else set()
    count = backend.quantize_linears(backbone, dtype, skip)
    if embeddings:
        bnb.quantize_embeddings(backbone, dtype)
    if count == 0:
        raise ConfigError(f"backbone_dtype {dtype}: the backbone has no nn.Linear layers to quantize")
    return backbone


def is_quantized_weight(p: torch.Tensor) -> bool:
    """True for a quantized weight of either backend (a torchao tensor subclass, a bitsandbytes parameter)."""
    return torchao_cpu.is_quantized_weight(p) or bnb.is_quantized_weight(p)
