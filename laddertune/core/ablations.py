"""The pruned side network alone (the paper's Figure 8 ablation): no ladders and no backbone at run time.

After the pruned initialisation has read the backbone's weights, :func:`strip_backbone` replaces each backbone
stack's layers by one :class:`_Stop` placeholder: the backbone then keeps only what comes before its first layer
(the token and position embeddings and their norm) and its heads. The side network reads only the embedding output
(its stacks have no tap layers), so :meth:`LadderModel.run_backbone` ends the backbone's forward as soon as that tap
is recorded, before the placeholder would run.
"""

from __future__ import annotations

import torch
from torch import nn

from .architectures import get_path
from .fingerprint import structure_fingerprint, value_signature


class _Stop(nn.Module):
    """Where the backbone's layers were. Never runs: the embedding tap ends the backbone's forward before it."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("this backbone was stripped to its embeddings: read its taps with backbone_taps")


def make_pruned(model) -> None:
    """After the pruned initialisation: make the side network the pruned backbone alone, then strip the backbone.

    ``embed_down`` selects the embedding's kept dims and ``up`` puts the side's output back at the dims the pruned
    trunk ends in (0/1 matrices, zero biases), so the network is the pruned backbone between the backbone's own
    embeddings and (a trainable copy of) its head; no ladder reads any other backbone layer.
    """
    (stack,) = model.side.stacks.values()
    start, end = stack.pruned_dims
    with torch.no_grad():
        for linear, rows, cols in (
            (stack.embed_down, torch.arange(len(start)), start),
            (model.side.up, end, torch.arange(len(end))),
        ):
            linear.weight.zero_()
            linear.weight[rows.to(linear.weight.device), cols.to(linear.weight.device)] = 1.0
            linear.bias.zero_()
    strip_backbone(model)


def strip_backbone(model) -> None:
    """Remove every backbone layer from ``model.backbone`` (in place), after recording the full backbone's
    fingerprint and signature in the LadderConfig, so checkpoints still name the backbone they were pruned from."""
    config = model.ladder_config
    if _stripped(model):
        return
    config.backbone_fingerprint = structure_fingerprint(model)
    config.backbone_signature = value_signature(model)
    for spec in model.family.stacks:
        trunk = get_path(model.backbone, spec.trunk)
        owner, _, attr = spec.layers.rpartition(".")
        setattr(get_path(trunk, owner), attr, nn.ModuleList([_Stop()]))


def _stripped(model) -> bool:
    return all(isinstance(model.backbone_layers(name)[0], _Stop) for name in model.side.stacks)
