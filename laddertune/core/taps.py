"""The backbone half of a LadderModel's forward: run the frozen backbone stacks and keep only their taps.

``collect_taps(model, **batch)`` returns what :meth:`LadderModel.forward` takes as ``taps=``, so a forward splits
into "collect taps" (the backbone, under ``no_grad``) and "side forward on taps". With backbone dropout off the taps
are a deterministic function of the batch, which is what lets a tap cache store them once and lets several side
networks share one backbone pass.
"""

from __future__ import annotations

import torch

from .architectures import get_path
from .side_network import record_taps


@torch.no_grad()
def collect_taps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    decoder_input_ids: torch.Tensor | None = None,
    decoder_attention_mask: torch.Tensor | None = None,
    layers: dict[str, list[int]] | None = None,
) -> dict[str, dict[int, torch.Tensor]]:
    """Run ``model``'s backbone stacks once and return their taps.

    Args:
        model: a :class:`~laddertune.core.model.LadderModel`.
        input_ids ... decoder_attention_mask: the batch, as for the model's forward.
        layers: backbone layer ids to record per stack (default: the side network's kept layers); a superset lets
            a tap cache serve runs that keep other layers.

    Returns:
        ``{stack name: {EMBED: (B, T, d), layer id: (B, T, d)}}``; for T5 ``encoder`` and ``decoder`` (the decoder's
        taps follow from the labels by teacher forcing, so they are as fixed as the encoder's).
    """
    names = [s.name for s in model.family.stacks]
    layers = layers or {name: model.side.stacks[name].tap_layers for name in names}
    out: dict[str, dict[int, torch.Tensor]] = {}

    def run(name: str, ids: torch.Tensor, **kwargs):
        stack = model.side.stacks[name]
        call = get_path(model.backbone, stack.spec.call)
        with record_taps(model._backbone_layers[name], layers[name]) as taps:
            result = call(
                input_ids=ids, use_cache=False, **{k: v for k, v in kwargs.items() if v is not None}
            )
        out[name] = dict(taps)
        return result

    if "body" in names:
        run(
            "body",
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
        )
        return out
    enc = run("encoder", input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    if decoder_input_ids is None:
        decoder_input_ids = model.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
    run(
        "decoder",
        decoder_input_ids,
        attention_mask=decoder_attention_mask,
        encoder_hidden_states=enc,
        encoder_attention_mask=attention_mask,
    )
    return out
