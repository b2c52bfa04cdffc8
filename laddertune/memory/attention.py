"""CUDA attention kernels in a CPU trace: which tensors each kernel keeps for backward.

A fake trace on CPU would follow CPU's ``scaled_dot_product_attention`` dispatch (its flash kernel or the math
fallback, which keeps the (B, H, T, T) probabilities). For CUDA predictions :func:`cuda_sdpa` routes
``F.scaled_dot_product_attention`` to the aten op CUDA would pick, whose meta kernel and autograd formula torch
registers for every device, so autograd saves exactly what the CUDA kernel saves:

- flash (``_scaled_dot_product_flash_attention``): fp16/bf16, head dim <= 256, no explicit mask (causal via
  ``is_causal``). Saves q, k, v, the output and the float32 logsumexp (B, H, T), plus the philox seed/offset when
  dropout is on. Backward allocates dq, dk, dv.
- memory-efficient (``_scaled_dot_product_efficient_attention``): float32, or any explicit mask/bias (T5's
  relative position bias). Saves q, k, v, the bias, the output, the float32 logsumexp (B, H, ceil(T/32)*32) and
  the seed/offset. Backward allocates dq, dk, dv and the (B, H, T, S) bias gradient when the bias needs one.

Grouped-query attention (``enable_gqa``) repeats k and v to the query heads first, as the math path does.
Not modelled: the kernels' internal workspaces (flash backward's float32 dq accumulator, ~B x T x H x D x 4 bytes,
lives only inside the backward kernel). Eager attention needs no emulation: its ops are the same on both devices.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .trace_emulation import patched

FLASH_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD_DIM = 256


def cuda_sdpa():
    """Patch ``F.scaled_dot_product_attention`` for the trace (see the module docstring)."""
    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if torch.is_autocast_enabled(query.device.type):  # SDPA is on autocast's lower-precision list
            dtype = torch.get_autocast_dtype(query.device.type)
            query, key, value = (t.to(dtype) for t in (query, key, value))
        if enable_gqa and key.shape[-3] != query.shape[-3]:
            groups = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(groups, -3), value.repeat_interleave(groups, -3)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        if query.dim() != 4:
            return original(query, key, value, attn_mask, dropout_p, is_causal, scale)
        if attn_mask is None and query.dtype in FLASH_DTYPES and query.shape[-1] <= FLASH_MAX_HEAD_DIM:
            out = torch.ops.aten._scaled_dot_product_flash_attention(
                query, key, value, dropout_p, is_causal, scale=scale
            )
            return out[0]
        if attn_mask is not None:
            attn_mask = attn_mask.to(query.dtype).expand(
                query.shape[0], query.shape[1], query.shape[2], key.shape[2]
            )
        out = torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, attn_mask, True, dropout_p, is_causal, scale=scale
        )
        return out[0]

    return patched(F, "scaled_dot_product_attention", sdpa)
