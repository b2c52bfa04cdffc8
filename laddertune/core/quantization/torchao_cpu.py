"""int8 / nf4 frozen linears on CPU with torchao (see the package docstring for why torchao).

int8: ``quantize_(module, Int8WeightOnlyConfig())``, per-channel int8 weights with float scales.
nf4: each weight becomes an ``NF4Tensor`` (4-bit NormalFloat, block-wise absmax scales, double-quantized as in
QLoRA); its ``F.linear`` dequantizes and multiplies, under ``no_grad`` like the rest of LST's backbone.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ...errors import ConfigError
from .linears import linear_children

NF4_BLOCK = 64  # QLoRA's block of weights per absmax scale
NF4_SCALER_BLOCK = (
    256  # QLoRA's block of scales per second-level scale (smaller for small tensors, see below)
)


def _torchao():
    # Deferred: torchao is an optional, heavy dependency (it imports a compiler stack).
    try:
        logging.getLogger("torchao").setLevel(
            logging.ERROR
        )  # it reports each CUDA-only kernel it cannot load
        import torchao.quantization as tq
    except ImportError:
        raise ConfigError(
            "backbone_dtype int8/nf4 on CPU needs torchao: pip install torchao (laddertune[quant])"
        ) from None
    return tq


def quantize_linears(backbone: nn.Module, scheme: str, skip: set[int]) -> int:
    """Quantize the ``nn.Linear`` layers of ``backbone`` (except ids in ``skip``) in place; returns how many."""
    tq = _torchao()
    targets = list(linear_children(backbone, skip))
    if scheme == "int8":
        wanted = {id(lin) for _, _, lin in targets}
        tq.quantize_(backbone, tq.Int8WeightOnlyConfig(), filter_fn=lambda m, _fqn: id(m) in wanted)
        return len(targets)
    for _, _, lin in targets:
        weight = lin.weight.detach()
        lin.weight = nn.Parameter(tq.to_nf4(weight, *_nf4_blocks(weight.numel())), requires_grad=False)
    return len(targets)


def _nf4_blocks(numel: int) -> tuple[int, int]:
    """(block, scaler block) for a weight of ``numel`` values: QLoRA's 64 and 256, halved until they divide."""
    block = NF4_BLOCK
    while numel % block:
        block //= 2
    scalers, scaler_block = numel // block, NF4_SCALER_BLOCK
    while scalers % scaler_block:
        scaler_block //= 2
    return block, scaler_block


def is_quantized_weight(p: torch.Tensor) -> bool:
    return type(p).__module__.startswith("torchao") or type(p.data).__module__.startswith("torchao")
