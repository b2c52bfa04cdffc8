"""The backbone half of a LadderModel's forward as a function: :meth:`LadderModel.backbone_taps`.

``collect_taps(model, **batch)`` returns what :meth:`LadderModel.side_forward` (or ``forward(taps=...)``) takes, so
a forward splits into "collect taps" (the backbone, under ``no_grad``) and "side forward on taps". With backbone
dropout off the taps are a deterministic function of the batch, which is what lets a tap cache store them once and
lets several side networks share one backbone pass.
"""

from __future__ import annotations

import torch


def collect_taps(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels=None, **kwargs
):
    """``model.backbone_taps(input_ids, attention_mask, labels, **kwargs)``: the backbone stacks' taps of a batch
    (see :meth:`laddertune.core.model.LadderModel.backbone_taps`)."""
    return model.backbone_taps(input_ids, attention_mask, labels, **kwargs)
