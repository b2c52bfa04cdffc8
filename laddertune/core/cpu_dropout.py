"""Dropout on CPU from 16 random bits an element instead of torch's ``bernoulli_``.

torch's CPU dropout draws one float per element from its Mersenne Twister on one thread (``bernoulli_``) and keeps a
float noise tensor for the backward; SDPA with ``dropout_p > 0`` leaves the flash kernel for the math one, which
does the same to the (B, H, T, T) probabilities. No library offers a faster CPU dropout, so this module draws 64-bit
words from the same generator (``random_``, four elements per word), keeps an element when its 16 bits clear ``p``
(``p`` rounded to a multiple of 2^-16, the scale ``1/(1 - p)`` rounded alike, so the output's expectation is still
the input), and keeps a bool mask for the backward, as CUDA's ``native_dropout`` does. A tap-cached MiniLM side step
(48 wide, MiniLM's dropouts) with torch's dropout takes 1.18x as long (``benchmarks/results/side_step_profile.md``).

:func:`fast_cpu_dropout` routes ``F.dropout`` and ``F.scaled_dot_product_attention`` with dropout through it, for
CPU tensors, while a side network trains (a ``TorchFunctionMode``: it reaches nn.Dropout modules, functional
dropout and attention kernels alike, in every family, without touching the modules). The generator is torch's
own, so ``torch.manual_seed``, checkpoint-and-resume of the RNG state and activation checkpointing's
recomputation (which restores the RNG state) hold as before; the masks are other draws than ``bernoulli_``'s.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

LEVELS = 1 << 16  # the 16 bits an element is kept or dropped by


def _levels(p: float) -> tuple[int, float]:
    """(cut, factor): an element whose 16 bits, read as 0..65535, fall below cut is dropped (cut at most 65535:
    one level kept), the rest are scaled by factor = 1/(1 - cut/65536)."""
    cut = min(round(p * LEVELS), LEVELS - 1)
    return cut, LEVELS / (LEVELS - cut)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, scaled: bool = True) -> torch.Tensor:
        cut, factor = _levels(p)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        bits = words.view(torch.int16)[:n].view(x.shape)  # int16 reads them as -32768..32767
        keep = bits >= cut - LEVELS // 2
        ctx.save_for_backward(keep)
        ctx.factor = factor if scaled else None
        return _masked(x, keep, ctx.factor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return _masked(grad, keep, ctx.factor), None, None


def _masked(x: torch.Tensor, keep: torch.Tensor, factor: float | None) -> torch.Tensor:
    """``x`` where ``keep``, else 0, times ``factor`` (None: 1). ``torch.where``, not a product with the mask: on
    CPU a product with a bool or uint8 mask converts it to x's dtype inside the kernel first, a temporary of x's
    size that the memory predictor's trace (fake tensors) does not see; with the conversion made explicit, the
    tiny T5 of ``tests/test_memory_precision.py`` peaked 3% above its prediction."""
    out = torch.where(keep, x, 0)
    return out.mul_(factor) if factor is not None else out


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each element of ``x`` with probability ``p`` (rounded to a multiple of 2^-16) and scale the rest
    by ``1/(1 - p)``; training mode, ``0 < p < 1``."""
    return _Dropout.apply(x, p)


def attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """``F.scaled_dot_product_attention`` with dropout, as torch's math kernel computes it (its documented
    reference: scores, mask, softmax, dropout, values; under autocast in its lower-precision dtype, and in float32
    for float16/bfloat16 inputs, as that kernel does), the dropout's masks from :func:`dropout`. The dropout's
    scale goes on the (B, H, T, E) output instead of the (B, H, T, S) probabilities, the softmax scale and a bool
    or causal mask are applied in place, the mask outside autograd (softmax's gradient is zero where it put -inf):
    two passes fewer over the largest tensors each way, and no tensor kept for the backward beyond what the plain
    formulation keeps."""
    device = query.device.type
    if torch.is_autocast_enabled(device):  # SDPA is on autocast's lower-precision list
        dtype = torch.get_autocast_dtype(device)
        query, key, value = (t.to(dtype) for t in (query, key, value))
    dtype = query.dtype
    with torch.autocast(device, enabled=False):
        if dtype in (torch.float16, torch.bfloat16):
            query, key, value = query.float(), key.float(), value.float()
        if enable_gqa and key.shape[-3] != query.shape[-3]:
            groups = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(groups, -3), value.repeat_interleave(groups, -3)
        scale = scale if scale is not None else 1 / math.sqrt(query.shape[-1])
        # in place: the product saves its inputs, not its output, so no new tensor is kept for the backward
        scores = (query @ key.transpose(-2, -1)).mul_(scale)
        with torch.no_grad():  # in place: nothing in the graph saved the scores
            if is_causal:  # above the diagonal: the future
                future = torch.ones(scores.shape[-2:], dtype=torch.bool, device=query.device).triu_(1)
                scores.masked_fill_(future, float("-inf"))
            if attn_mask is not None and attn_mask.dtype == torch.bool:
                scores.masked_fill_(attn_mask.logical_not(), float("-inf"))
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            scores = scores + attn_mask  # a float mask can be a trained bias (T5's): it stays in autograd
        probs = torch.softmax(scores, dim=-1)
        kept = _Dropout.apply(probs, dropout_p, False)
        return (kept @ value).mul_(_levels(dropout_p)[1]).to(dtype)


def _dropping(p) -> bool:
    return isinstance(p, float | int) and 0 < p < 1


class _FastCpuDropout(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            bound = _bind(("input", "p", "training", "inplace"), (None, 0.5, True, False), args, kwargs)
            x, p, training, inplace = bound
            if training and not inplace and _dropping(p) and x.device.type == "cpu":
                return dropout(x, float(p))
        elif func is F.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            bound = _bind(names, (None, None, None, None, 0.0, False, None, False), args, kwargs)
            if _dropping(bound[4]) and bound[0].device.type == "cpu":
                return attention(*bound)
        return func(*args, **kwargs)


def _bind(names: tuple, defaults: tuple, args: tuple, kwargs: dict) -> list:
    values = list(args) + list(defaults[len(args) :])
    for i, name in enumerate(names):
        if name in kwargs:
            values[i] = kwargs[name]
    return values


ENV = "LADDERTUNE_CPU_DROPOUT"
# ``LADDERTUNE_CPU_DROPOUT=torch``: torch's own CPU dropout (its masks, as laddertune drew them before this module)
ENABLED = os.environ.get(ENV, "").lower() != "torch"


def fast_cpu_dropout(training: bool, device: torch.device):
    """The context a side network's forward on ``device`` runs in (see the module docstring); a no-op unless it
    trains on the CPU (a mode on CUDA would only add a Python call to every op)."""
    if not (training and ENABLED and device.type == "cpu"):
        return contextlib.nullcontext()
    return _FastCpuDropout()
