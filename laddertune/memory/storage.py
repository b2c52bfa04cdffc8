"""Quantized frozen linears as the memory predictor traces them: bitsandbytes' storage, on fake tensors.

bitsandbytes cannot run on fake tensors (its kernels are CUDA code), so the predictor swaps every frozen
``nn.Linear`` (never the LM head, as :func:`laddertune.core.quantization.convert_backbone`) for a module that holds
exactly the tensors bitsandbytes keeps and allocates exactly the transients its forward/backward make. Modelled:

``int8`` (``bnb.nn.Linear8bitLt``, ``has_fp16_weights=False``, threshold 0: LLM.int8() without outliers):
    storage: the int8 weight (out x in, 1 byte each) + one float32 scale per output row (``SCB``) + the bias.
    forward: the input quantized row-wise (an int8 copy of it + one float32 scale per row), the int32 accumulator
    (rows x out), then the output in the input's dtype. The weight is never dequantized.
``nf4`` (``bnb.nn.Linear4bit``, ``quant_type="nf4"``, QLoRA's setup):
    storage: the packed weight, 2 values per byte (``ceil(n/2)`` uint8), one absmax per block of 64 values; with
    double quantization (the default, ``compress_statistics=True``) the absmax values are uint8 with one float32
    second-level scale per 256 of them plus a float32 offset, else float32; the 16-value float32 NF4 code table
    per weight. The 256-value float32 code of the second level is shared by all weights (bitsandbytes caches it;
    1 KiB once, not counted).
    forward: the absmax dequantized to float32 (double quantization only), then the whole weight dequantized to
    the compute dtype (out x in, transient), one matmul; backward (when the input needs a gradient, QLoRA) does
    the same dequantization again and multiplies the output gradient by it. Nothing but the packed weight is saved
    for backward.

Not modelled: bitsandbytes' CUDA workspaces and its inference-only ``gemv_4bit`` path (one token at a time).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.flop_counter import register_flop_formula

NF4_BLOCK = 64  # values per absmax (bitsandbytes' 4-bit blocksize, QLoRA's)
NESTED_BLOCK = 256  # absmax values per second-level scale (double quantization)
NF4_CODE = 16  # float32 values in the NF4 code table each weight's QuantState keeps
DYNAMIC_CODE = 256  # float32 values in the shared 8-bit dynamic map of the second level


def int8_weight_bytes(out_features: int, in_features: int) -> int:
    """Bytes bitsandbytes keeps for one int8 weight: the int8 matrix and a float32 scale per row."""
    return out_features * in_features + 4 * out_features


def nf4_weight_tensors(numel: int, double_quant: bool = True) -> list[tuple[int, torch.dtype]]:
    """(number of elements, dtype) of every tensor bitsandbytes keeps for one nf4 weight (the shared code aside)."""
    blocks = math.ceil(numel / NF4_BLOCK)
    tensors = [(math.ceil(numel / 2), torch.uint8), (NF4_CODE, torch.float32)]
    if double_quant:
        tensors += [
            (blocks, torch.uint8),
            (math.ceil(blocks / NESTED_BLOCK), torch.float32),
            (1, torch.float32),
        ]
    else:
        tensors.append((blocks, torch.float32))
    return tensors


def nf4_weight_bytes(numel: int, double_quant: bool = True) -> int:
    """Bytes of :func:`nf4_weight_tensors` (without the 1 KiB shared second-level code)."""
    return sum(n * dtype.itemsize for n, dtype in nf4_weight_tensors(numel, double_quant))


@register_flop_formula(torch.ops.aten._int_mm)
def _int_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode has no formula for the int8 matmul (bitsandbytes' int8 GEMM is one): 2 m k n."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


class _Dequantized(torch.autograd.Function):
    """``x @ W.T`` where W exists only while a kernel needs it: dequantized in forward and again in backward."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        weight = layer.dequantize(x.dtype)
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        weight = ctx.layer.dequantize(grad.dtype)
        return grad @ weight, None


class EmulatedQuantLinear(nn.Linear):
    """A frozen ``nn.Linear`` stored as bitsandbytes stores it (see the module docstring).

    A subclass of ``nn.Linear`` so that PEFT's LoRA wraps it as it wraps ``bnb.nn.Linear4bit``; its ``weight`` is
    the packed/int8 storage (shape as bitsandbytes' ``Params4bit``: (ceil(n/2), 1)), frozen.
    """

    def __init__(self, linear: nn.Linear, scheme: str, compute_dtype: torch.dtype, double_quant: bool = True):
        nn.Module.__init__(self)  # not nn.Linear.__init__: that would allocate a full-precision weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scheme, self.compute_dtype, self.double_quant = scheme, compute_dtype, double_quant
        n = self.in_features * self.out_features
        if scheme == "int8":
            self.weight = nn.Parameter(
                torch.empty(self.out_features, self.in_features, dtype=torch.int8), requires_grad=False
            )
            self.register_buffer("scb", torch.empty(self.out_features, dtype=torch.float32))
        else:
            (packed, _), *stats = nf4_weight_tensors(n, double_quant)
            self.weight = nn.Parameter(torch.empty(packed, 1, dtype=torch.uint8), requires_grad=False)
            for i, (count, dtype) in enumerate(stats):
                self.register_buffer(f"quant_state_{i}", torch.empty(count, dtype=dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The full weight (transient), as ``bnb.functional.dequantize_4bit`` makes it."""
        blocks = math.ceil(self.in_features * self.out_features / NF4_BLOCK)
        absmax = torch.empty(blocks) if self.double_quant else None  # the absmax values first, in float32
        weight = torch.empty(self.out_features, self.in_features, dtype=dtype)
        del absmax
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        if self.scheme == "int8":
            rows = x.shape[:-1]
            quantized, _row_scales = torch.empty_like(x, dtype=torch.int8), torch.empty(rows)
            acc = torch._int_mm(quantized.reshape(-1, self.in_features), self.weight.t())  # int32
            del quantized, _row_scales
            out = acc.to(in_dtype).reshape(*rows, self.out_features)
            del acc
        else:
            x = x.to(self.compute_dtype)
            out = (
                _Dequantized.apply(x, self)
                if torch.is_grad_enabled() and x.requires_grad
                else self._no_grad(x)
            )
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.to(in_dtype)

    def _no_grad(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dequantize(x.dtype)
        return x @ weight.t()


class EmulatedQuantEmbedding(nn.Module):
    """A frozen token embedding stored as bitsandbytes' ``Embedding4bit`` (nf4, no double quantization: a float32
    absmax per 64 values) or ``Embedding8bit`` (int8 rows + a float32 scale per row) stores it. Its forward
    dequantizes only the looked-up rows (bitsandbytes does when the width is a multiple of 64): the output, in the
    compute dtype, is the only transient."""

    def __init__(self, embedding: nn.Embedding, scheme: str, compute_dtype: torch.dtype):
        super().__init__()
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        self.scheme, self.compute_dtype = scheme, compute_dtype
        n = self.num_embeddings * self.embedding_dim
        if scheme == "int8":
            self.weight = nn.Parameter(torch.empty(n, dtype=torch.int8), requires_grad=False)
            self.register_buffer("scb", torch.empty(self.num_embeddings, dtype=torch.float32))
        else:
            self.weight = nn.Parameter(
                torch.empty(math.ceil(n / 2), 1, dtype=torch.uint8), requires_grad=False
            )
            self.register_buffer("absmax", torch.empty(math.ceil(n / NF4_BLOCK), dtype=torch.float32))
            self.register_buffer("code", torch.empty(NF4_CODE, dtype=torch.float32))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.empty(*ids.shape, self.embedding_dim, dtype=self.compute_dtype, device=ids.device)


def emulate_quantized_embeddings(model: nn.Module, scheme: str, compute_dtype: torch.dtype) -> None:
    """Swap the input embeddings of ``model`` (a transformers model) for an :class:`EmulatedQuantEmbedding`, as
    :func:`laddertune.core.quantization.quantize_embeddings` does on CUDA (a plain ``nn.Embedding`` only)."""
    embedding = model.get_input_embeddings()
    if type(embedding) is nn.Embedding:
        model.set_input_embeddings(EmulatedQuantEmbedding(embedding, scheme, compute_dtype))


def emulate_quantized_linears(
    module: nn.Module, scheme: str, skip: set[int], compute_dtype: torch.dtype = torch.bfloat16
) -> int:
    """Swap every plain ``nn.Linear`` below ``module`` (ids in ``skip`` aside) for an :class:`EmulatedQuantLinear`."""
    from ..core.quantization.linears import linear_children

    targets = list(linear_children(module, skip))
    for parent, name, linear in targets:
        setattr(parent, name, EmulatedQuantLinear(linear, scheme, compute_dtype))
    return len(targets)


ADAM8_BLOCK = 256  # values per absmax of bitsandbytes' block-wise 8-bit optimizer state
ADAM8_MIN_SIZE = 4096  # smaller tensors keep float32 state (bitsandbytes' min_8bit_size)


class EmulatedAdamW8bit(torch.optim.Optimizer):
    """bitsandbytes' ``AdamW8bit`` state on fake tensors (its fused CUDA kernel cannot run on them).

    State per parameter of at least 4,096 values: both moments as uint8 (1 byte each) and one float32 absmax per
    256 values for each; smaller parameters keep two float32 moments, as bitsandbytes does. The step updates in
    place and allocates nothing (the fused kernel's behaviour); its arithmetic is not AdamW's, only its memory.
    """

    def __init__(self, params, lr: float = 1e-3):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    if p.numel() >= ADAM8_MIN_SIZE:
                        blocks = math.ceil(p.numel() / ADAM8_BLOCK)
                        for i in (1, 2):
                            state[f"state{i}"] = torch.zeros_like(p, dtype=torch.uint8)
                            state[f"absmax{i}"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
                    else:
                        state["state1"], state["state2"] = torch.zeros_like(p), torch.zeros_like(p)
                p.add_(p.grad, alpha=-group["lr"])
