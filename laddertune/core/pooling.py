"""Pooling a sequence of hidden states into one vector per example, as each classification head does."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake  # the memory predictor traces with fake tensors

from .architectures import get_path
from .packed_tap import padded
from .tap_projection import FINAL


def pool(
    kind: str | None, hidden: torch.Tensor, input_ids, attention_mask, eos_token_id=None
) -> torch.Tensor:
    """Pool ``hidden`` (B, T, d) as ``kind`` says (``Family.cls_pool``); ``None`` returns it unchanged.

    ``first``: token 0; ``eos``: the last end-of-sentence token (BART); ``mean``: over non-padding tokens
    (ModernBERT's ``classifier_pooling="mean"``); ``last``: the last non-padding token, for left or right padding.
    """
    if kind == "first":
        return hidden[:, 0]
    if kind == "eos":  # BART: the last </s> of each example (its head requires one)
        eos = input_ids.eq(eos_token_id)  # (B, T)
        # (skipped under the memory predictor's FakeTensor trace, which has no token values to test)
        if not is_fake(eos) and not eos.any(-1).all():
            raise ValueError("every example must contain an end-of-sentence token for BART pooling")
        positions = torch.arange(eos.shape[1], device=eos.device)
        last = (eos.to(positions.dtype) * (positions + 1)).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
    if kind == "mean":
        weights = torch.ones_like(hidden[..., 0]) if attention_mask is None else attention_mask.to(hidden)
        return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    if kind == "last":
        if attention_mask is None:
            return hidden[:, -1]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (attention_mask.to(positions.dtype) * (positions + 1)).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return hidden


def backbone_final(model, name: str, backbone_out, taps) -> torch.Tensor:
    """The backbone stack ``name``'s final hidden states (B, T, d): its output when it ran, else its last layer's
    full-width tap (``FINAL`` when the taps are projected) through the stack's own final norm (when it has one),
    without autograd either way."""
    if backbone_out is not None:
        return backbone_out.last_hidden_state
    stack = model.side.stacks[name]
    last = FINAL if stack.projection is not None else stack.num_backbone_layers - 1
    if last not in taps:
        raise ValueError(f"final_shortcut needs the backbone's last layer ({last}) among the given taps")
    trunk = get_path(model.backbone, stack.spec.trunk)
    norm = get_path(trunk, stack.spec.final_norm) if stack.spec.final_norm else None
    with torch.no_grad():
        state = padded(taps[last])
        return state if norm is None else norm(state)
