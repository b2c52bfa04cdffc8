"""The pruned side network alone (the paper's Figure 8 ablation): no ladders and no backbone at run time.

After the pruned initialisation has read the backbone's weights, :func:`strip_backbone` replaces each backbone
stack's layers by one :class:`_Stop` module: the backbone then keeps only what comes before its first layer (the
token and position embeddings and their norm) and its heads. :func:`embedding_taps` runs that front up to the first
layer, which raises with its input: the side network's only input, the embedding output it would read in LST.
"""

from __future__ import annotations

import torch
from torch import nn

from .architectures import get_path
from .fingerprint import structure_fingerprint, value_signature
from .side_network import EMBED


class _StopAtFirstLayer(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__("the embedding output is ready")
        self.hidden = hidden


class _Stop(nn.Module):
    """Where the backbone's layers were: ends the backbone's forward with the embedding output."""

    def forward(self, hidden_states=None, *args, **kwargs):
        raise _StopAtFirstLayer(hidden_states if hidden_states is not None else args[0])


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
        model._backbone_layers[spec.name] = get_path(trunk, spec.layers)


def _stripped(model) -> bool:
    return all(isinstance(layers[0], _Stop) for layers in model._backbone_layers.values())


def embedding_taps(model, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> dict:
    """``{"body": {EMBED: (B, T, d)}}``: the backbone's embedding output, from its front alone, without autograd."""
    (spec,) = model.family.stacks
    kwargs = {
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "position_ids": position_ids,
    }
    call = get_path(model.backbone, spec.call)
    try:
        with torch.no_grad():
            call(input_ids=input_ids, **{k: v for k, v in kwargs.items() if v is not None}, use_cache=False)
    except _StopAtFirstLayer as stop:
        return {spec.name: {EMBED: stop.hidden.to(model.device)}}
    raise RuntimeError("the backbone ran to its end without reaching its first layer")
