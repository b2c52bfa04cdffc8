"""Re-entry: the side network's output joins the backbone's residual stream below its top layers
(:attr:`~laddertune.core.config.LadderConfig.reentry_layers`).

With the final shortcut alone, a causal LM's head reads ``final + Up(side)``: the side network must compute in
its own 1/r width whatever the answer needs that the backbone's last state does not hold. On the instruction
sample that is most of it: the side learns the answers' kinds (a continent) but copies the question's words
where the answer has to be made from them ("lady" for the plural of "lady"; benchmarks/results/
instruction_per_kind_smollm2.md). With re-entry, ``Up(side)`` is added to the residual stream at the input of the
backbone's layer ``L - K`` and the top K frozen layers run again on it, then the final norm and the LM head: the
backbone's own upper attention and feed-forward layers turn the side's signal into tokens. Their weights stay
frozen and get no gradient; the backward passes through their activations and pays one more forward and a
backward of K layers. Side checkpointing (:attr:`~laddertune.core.config.LadderConfig.side_checkpointing`, on by
default for LM heads) recomputes them in the backward, one layer at a time, for one more forward of K layers;
without it training keeps the K layers' activations (K/L of what a LoRA backward keeps).

The up-projection starts at zero, so at step 0 the head reads the backbone's own final state, as with the final
shortcut alone. ``Up(side)`` is scaled by each position's root-mean-square over the residual stream it joins
(without gradient): the side then works in the normalised units its up-projection starts in, whatever the stream's
scale at that depth (a plain sum, tried first, learned far slower: the stream deep in a decoder is many times larger
than a normalised state, and an up-projection that starts at zero takes many steps to match it).

No per-architecture code: pre-hooks record each top layer's call while the backbone runs (its input and its
other arguments: masks, rotary tables, cache positions), and the top layers are called again with the same
arguments, any ``Cache`` among them swapped for the re-entry's own (the re-run layers write other keys and values
than the backbone's pass did; :class:`~laddertune.core.cache.LadderCache` holds both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import Cache

from ..errors import ConfigError
from .architectures import get_path


@dataclass
class LayerCall:
    """One call of a backbone layer: the layer, its input hidden states and the rest of its arguments."""

    layer: nn.Module
    hidden: torch.Tensor | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def check_reentry(config, family) -> None:
    """Refuse re-entry (``config.reentry_layers``) where a stack's last layer does not reach the head through one
    final norm that :func:`reentered` can apply (OPT: a projection follows its final norm)."""
    if config.reentry_layers and any(spec.final_norm is None for spec in family.stacks):
        raise ConfigError(
            f"reentry_layers needs the last layer's output to reach the head through one final norm; the "
            f"{family.name} family's does not (or it is not known)"
        )


def recording(model, stack: str):
    """While the block runs, record the calls of backbone stack ``stack``'s top ``reentry_layers`` layers
    (:func:`record_layer_calls`); without re-entry nothing is recorded (None) and no layer is looked up."""
    k = model.ladder_config.reentry_layers
    if not k:
        return contextlib.nullcontext()
    layers = model.backbone_layers(stack)
    return record_layer_calls(list(layers)[len(layers) - k :])


def reentered(model, stack: str, hidden: torch.Tensor, calls: list[LayerCall], cache) -> torch.Tensor:
    """A LadderModel's re-entry: ``Up(hidden)`` joined to the backbone's residual stream at the input of the first
    recorded layer (``L - K``), the top K frozen layers run again on it, each with its own recorded arguments (and
    the ``LadderCache``'s re-entry cache when generating), then the stack's final norm: (B, T, d), what the LM head
    reads."""
    side = model.side.stacks[stack]
    stream = join(calls[0].hidden, model.side.up(hidden))
    rerun_cache = None if cache is None else cache.reentry_for(model.backbone)
    # side checkpointing covers the re-run layers: besides the side's, theirs are the backward's activations
    state = rerun_layers(calls, stream, rerun_cache, checkpointed=side.recomputes(cache))
    spec = side.spec
    return get_path(get_path(model.backbone, spec.trunk), spec.final_norm)(state)


@contextlib.contextmanager
def record_layer_calls(layers: Sequence[nn.Module]) -> Iterator[list[LayerCall]]:
    """While the block runs, record each of ``layers``' (last) call: one :class:`LayerCall` per layer, in order.
    Each layer keeps its own arguments: families that alternate sliding-window and global attention (Gemma 2)
    give each layer the mask of its kind."""
    calls = [LayerCall(layer) for layer in layers]

    def hook_for(call: LayerCall):
        def hook(module, args, kwargs):
            call.kwargs = dict(kwargs)
            if args:
                call.hidden, call.args = args[0], args[1:]
            else:
                call.hidden = call.kwargs.pop("hidden_states")

        return hook

    handles = [call.layer.register_forward_pre_hook(hook_for(call), with_kwargs=True) for call in calls]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def rerun_layers(
    calls: Sequence[LayerCall], hidden: torch.Tensor, cache: Cache | None, checkpointed: bool = False
) -> torch.Tensor:
    """The recorded calls' layers run again in order on ``hidden``, each with its call's other arguments, every
    ``Cache`` among them replaced by ``cache``; the last layer's hidden states. ``checkpointed`` (training, no
    cache): each layer runs inside ``torch.utils.checkpoint``, so the backward keeps only each layer's input and
    recomputes the layer's activations one layer at a time."""

    def swap(value):
        return cache if isinstance(value, Cache) else value

    def run(call: LayerCall, hidden: torch.Tensor) -> torch.Tensor:
        out = call.layer(
            hidden, *(swap(a) for a in call.args), **{k: swap(v) for k, v in call.kwargs.items()}
        )
        return out[0] if isinstance(out, tuple) else out

    for call in calls:
        # non-reentrant: the recorded arguments (masks, rotary tables) are saved as the closure's tensors
        hidden = checkpoint(run, call, hidden, use_reentrant=False) if checkpointed else run(call, hidden)
    return hidden


def join(stream: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The residual ``stream`` (B, T, d) plus ``up`` (B, T, d) scaled by each position's root-mean-square of the
    stream (no gradient flows into the stream: it is the frozen backbone's), in the stream's dtype and device."""
    scale = stream.detach().float().pow(2).mean(-1, keepdim=True).sqrt()  # (B, T, 1)
    return stream + (up.to(scale.device) * scale).to(stream.dtype)
