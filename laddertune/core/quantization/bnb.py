"""int8 / nf4 frozen linears on CUDA with bitsandbytes (QLoRA's library; transformers' ``BitsAndBytesConfig``).

Each ``nn.Linear`` is swapped for ``bnb.nn.Linear8bitLt`` (LLM.int8(), ``has_fp16_weights=False``: int8 weights
only) or ``bnb.nn.Linear4bit`` (``quant_type="nf4"``, double quantization, bf16 compute), whose weights quantize
when moved to the GPU: the same modules transformers builds for ``load_in_8bit`` / ``load_in_4bit``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from .linears import linear_children

COMPUTE_DTYPE = torch.bfloat16  # Linear4bit's compute dtype, and the dtype of the backbone's other weights


def _bitsandbytes():
    # Deferred: bitsandbytes is an optional dependency with CUDA kernels.
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError(
            "backbone_dtype int8/nf4 on CUDA needs bitsandbytes: pip install 'laddertune[cuda]'"
        ) from None
    return bitsandbytes


def quantize_linears(backbone: nn.Module, scheme: str, skip: set[int]) -> int:
    """Replace the ``nn.Linear`` layers of a CUDA ``backbone`` (except ids in ``skip``); returns how many."""
    bnb = _bitsandbytes()
    targets = list(linear_children(backbone, skip))
    for parent, name, lin in targets:
        device, bias = lin.weight.device, lin.bias is not None
        if scheme == "int8":
            new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias, has_fp16_weights=False)
            new.weight = bnb.nn.Int8Params(lin.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(
                lin.in_features,
                lin.out_features,
                bias,
                compute_dtype=COMPUTE_DTYPE,
                quant_type="nf4",
                compress_statistics=True,
            )
            new.weight = bnb.nn.Params4bit(lin.weight.data.cpu(), requires_grad=False, quant_type="nf4")
        if bias:
            new.bias = nn.Parameter(lin.bias.data, requires_grad=False)
        setattr(parent, name, new.to(device))  # moving to CUDA quantizes the weight
    return len(targets)


def quantize_embeddings(backbone: nn.Module, scheme: str) -> bool:
    """Replace a CUDA backbone's input embeddings (a plain ``nn.Embedding``: scaled ones such as Gemma's keep
    theirs) by ``bnb.nn.Embedding4bit`` (nf4) or ``Embedding8bit``; returns whether it did. Not yet run on a GPU in
    this project's tests (no CUDA there)."""
    bnb = _bitsandbytes()
    old = backbone.get_input_embeddings()
    if type(old) is not nn.Embedding:
        return False
    n, d, device = old.num_embeddings, old.embedding_dim, old.weight.device
    if scheme == "int8":
        new = bnb.nn.Embedding8bit(n, d, dtype=COMPUTE_DTYPE)
        new.weight = bnb.nn.Int8Params(old.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
    else:
        new = bnb.nn.Embedding4bit(n, d, dtype=COMPUTE_DTYPE, quant_type="nf4")
        new.weight = bnb.nn.Params4bit(
            old.weight.data.cpu(), requires_grad=False, quant_type="nf4", module=new
        )
    backbone.set_input_embeddings(new.to(device))  # moving to CUDA quantizes the weight
    return True


def is_quantized_weight(p: torch.Tensor) -> bool:
    return type(p).__name__ in ("Int8Params", "Params4bit")
