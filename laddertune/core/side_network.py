"""The ladder side network of one backbone stack, and the taps that feed it.

A side stack is a reduced copy of the backbone's own stack module (``T5Stack``, ``BertEncoder``, ``LlamaModel``...)
plus its ladders: a down-projection of the backbone's embedding output that becomes the side input, and before
side layer j (mirroring backbone layer i = kept[j]) the gated mix (docs/concepts.md#fact-side-network, the authors' code)

    s = mu_i * s + (1 - mu_i) * Down_i(b_i),    mu_i = sigmoid(alpha_i / T)

where b_i is the output of backbone layer i. The mix runs in a forward pre-hook on the side layer, so the side
trunk's own forward (masks, positions, caches, relative bias) is the library's, unmodified.

With activation checkpointing (``LadderConfig.side_checkpointing``) each side layer's ``forward`` is wrapped so that
the mix and the layer run inside ``torch.utils.checkpoint`` with the tap as an explicit input: the backward's
recomputation reads the same tap although the pre-hook's taps are gone by then. The wrapper is an instance
attribute, not a module, so the state_dict names stay the backbone's.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.utils import ModelOutput

from ..errors import ConfigError
from .architectures import (
    Family,
    StackSpec,
    get_path,
    layer_modules,
    reduced_config,
    set_attention_dropout,
    set_hidden_dropout,
)
from .cache_names import CACHE
from .config import LadderConfig, strided_layers
from .cpu_dropout import fast_cpu_dropout
from .heads import set_attention_heads
from .packed_tap import PackedTap, per_token
from .tap_projection import FINAL, TapProjection

# Key of the embedding output (the input of backbone layer 0) among the taps.
EMBED = -1


class _TapsComplete(Exception):
    """Raised by a tap hook once every wanted tap is recorded, to end the backbone's forward there."""


@contextlib.contextmanager
def record_taps(
    layers: nn.ModuleList,
    kept: list[int],
    *,
    stop_when_complete: bool = False,
    project: nn.Module | None = None,
) -> Iterator[dict[int, torch.Tensor]]:
    """Record what the side network reads while the backbone stack runs.

    Yields a dict filled during the forward: ``taps[EMBED]`` is the input of layer 0 (the embedding output, after
    the backbone's own embedding dropout/norm), ``taps[i]`` the output of layer ``i`` for ``i`` in ``kept``, and
    ``taps[FINAL]`` (when ``kept`` holds :data:`~laddertune.core.tap_projection.FINAL`) the output of the last
    layer at full width, for the final shortcut. Only these tensors are kept alive; the hooks are removed on exit,
    leaving the backbone untouched.

    ``project``: a :class:`~laddertune.core.tap_projection.TapProjection` applied to every tap but ``FINAL`` as it
    is recorded, so the full-width state stays a transient of the backbone's forward.

    ``stop_when_complete``: end the backbone's forward as soon as the last wanted tap is recorded (right at layer 0
    when only ``EMBED`` is wanted), for callers that need the taps and not the backbone's output: the layers
    after the last kept one (and its head) do not run. A hook cannot return early from a Hugging Face model's
    forward, so it raises a private exception that this context manager absorbs; the ``with`` body is left at
    the backbone call, whose result is then never assigned.

    ``layers`` lists the layers in the order they run (:func:`~laddertune.core.architectures.layer_modules`). A
    block listed more than once is SHARED (ALBERT's one layer group): its hooks count the calls, so ``taps[i]`` is
    the output of the i-th application and ``taps[EMBED]`` the input of the first.
    """
    taps: dict[int, torch.Tensor] = {}
    calls = [0]  # applications so far (shared blocks)
    final = len(layers) - 1 if FINAL in kept else None
    wanted = {i for i in kept if i != FINAL}
    last = max({*wanted, *((final,) if final is not None else ())}, default=EMBED)
    last = last if stop_when_complete else None

    def keep(key: int, tensor: torch.Tensor) -> None:
        taps[key] = tensor if project is None else project(tensor, key)

    def take_input(module, args, kwargs):
        if not calls[0]:
            keep(EMBED, args[0] if args else kwargs["hidden_states"])
            if last == EMBED:
                raise _TapsComplete

    def take_output(i, module, args, output):
        hidden = output[0] if isinstance(output, tuple | list) else output
        if i in wanted:
            keep(i, hidden)
        if i == final:
            taps[FINAL] = hidden
        if i == last:
            raise _TapsComplete

    def take_application(module, args, output):
        i, calls[0] = calls[0], calls[0] + 1
        if i in wanted or i == final:
            take_output(i, module, args, output)

    handles = [layers[0].register_forward_pre_hook(take_input, with_kwargs=True)]
    blocks = list({id(m): m for m in layers}.values())
    hooked = sorted({*wanted, *((final,) if final is not None else ())})
    if len(blocks) < len(layers):
        handles += [m.register_forward_hook(take_application) for m in blocks]
    else:
        handles += [layers[i].register_forward_hook(functools.partial(take_output, i)) for i in hooked]
    try:
        yield taps
    except _TapsComplete:
        pass
    finally:
        for handle in handles:
            handle.remove()


class SideStack(nn.Module):
    """The side network for one backbone stack: trunk, down-projections and gates.

    Args:
        family: the architecture table entry.
        spec: which backbone stack this mirrors.
        backbone: the backbone model (read for shapes and config only).
        reduction_factor: r.
        side_layers: backbone layer ids that get a side layer (None: ``side_layer_stride``'s).
        side_layer_stride: without ``side_layers``, a side layer on every k-th backbone layer (None: every layer).
        gate_temperature: T of the gates.
        gate_init: initial alpha of the gates.
        ladders: False builds no down-projections of layer outputs and no gates (side-tuning, pruned).
        attn_implementation: the side trunk's attention kernel.
        checkpointing: recompute each side layer in the backward instead of keeping its activations.
        dropout: the side trunk's hidden-state dropout; None keeps the backbone config's.
        attention_dropout: the side trunk's attention-probability dropout; None keeps the backbone config's.
        attention_heads: the side's heads (:func:`laddertune.core.heads.set_attention_heads`: None chooses, 0
            keeps the backbone's).
        tap_projection: ``none``, ``pca`` or ``random`` (:mod:`laddertune.core.tap_projection`).
        tap_rank: the projected taps' width; None: the side width.
    """

    def __init__(
        self,
        family: Family,
        spec: StackSpec,
        backbone: nn.Module,
        *,
        reduction_factor: int,
        side_layers: list[int] | None = None,
        side_layer_stride: int | None = None,
        gate_temperature: float = 0.1,
        gate_init: float = 0.0,
        attn_implementation: str = "sdpa",
        ladders: bool = True,
        checkpointing: bool = False,
        dropout: float | None = None,
        attention_dropout: float | None = None,
        attention_heads: int | None = None,
        tap_projection: str = "none",
        tap_rank: int | None = None,
    ) -> None:
        super().__init__()
        source = get_path(backbone, spec.trunk)
        num_backbone_layers = len(layer_modules(backbone, spec))  # applications, for shared layers (ALBERT)
        if side_layers is None:
            kept = strided_layers(num_backbone_layers, side_layer_stride or 1)
        else:
            kept = list(side_layers)
        if kept[-1] >= num_backbone_layers:
            raise ConfigError(
                f"side layer {kept[-1]} is out of range: the backbone's {spec.name} stack has "
                f"{num_backbone_layers} layers (ids 0..{num_backbone_layers - 1})"
            )
        source_config = getattr(source, "config", backbone.config)  # bare modules (DistilBERT's) have none
        self.family, self.spec, self.kept = family, spec, kept
        self.backbone_heads = getattr(source_config, family.heads)
        self.num_backbone_layers = num_backbone_layers
        # the backbone layers whose outputs this stack reads (SideNetwork adds the last for the final shortcut)
        self.tap_layers = kept
        self.temperature = gate_temperature
        config = reduced_config(
            family, spec, source_config, reduction_factor, len(kept), keep_heads=attention_heads == 0
        )
        if dropout is not None:
            set_hidden_dropout(config, dropout)
        if attention_dropout is not None:
            set_attention_dropout(config, attention_dropout)
        set_attention_heads(family, config, attention_heads, source_config)
        if (
            attn_implementation == "sdpa"
            and isinstance(source, PreTrainedModel)
            and not source._supports_sdpa
        ):
            attn_implementation = "eager"  # a family without an SDPA kernel (Gemma2's soft-capped attention)
        config._attn_implementation = attn_implementation  # the backbone's own choice need not be the side's
        config.dtype = torch.float32  # master weights, whatever dtype the backbone is in
        self.trunk = type(source)(config)
        self.trunk_config = config  # bare modules (DistilBERT's Transformer) keep no .config
        params = inspect.signature(self.trunk.forward).parameters
        # the keyword arguments the trunk takes (all of them when it has **kwargs): DebertaV2Encoder has no use_cache
        self._accepts = None if any(p.kind is p.VAR_KEYWORD for p in params.values()) else set(params)
        self._returns_tuples = "return_dict" in params
        if spec.token_embedding:  # the side reads the backbone's embeddings through embed_down instead
            owner, _, attr = spec.token_embedding.rpartition(".")
            setattr(get_path(self.trunk, owner), attr, None)
        if (
            spec.embedding_projection
        ):  # the embedding tap is this projection's output (ALBERT): the side skips it
            owner, _, attr = spec.embedding_projection.rpartition(".")
            setattr(get_path(self.trunk, owner), attr, nn.Identity())
        if not isinstance(self.trunk, PreTrainedModel):
            # Bare modules (BertEncoder) get the family's own initialisation; PreTrainedModels did it in post_init.
            self.trunk.apply(backbone._init_weights)
        width = getattr(source_config, family.width)
        side_width = getattr(config, family.width)
        self.width = width  # the backbone's: the final shortcut's state
        self.projection = None
        if tap_projection != "none" and ladders:
            rank = tap_rank or side_width
            self.projection = TapProjection([EMBED, *kept], width, rank, tap_projection)
            width = rank  # what Down reads: A_i of Down_i = A_i P_i
        self.tap_width = width
        self.embed_down = nn.Linear(width, side_width)
        self.downs = nn.ModuleList(nn.Linear(width, side_width) for _ in (kept if ladders else ()))
        # One gate per BACKBONE layer, as the authors' code keeps (t5-base golden count 3,878,712 with 9 of 12
        # layers kept; 3,878,706 if only kept layers had gates). Gates of dropped layers are never used.
        self.gates = nn.Parameter(torch.full((num_backbone_layers if ladders else 0,), float(gate_init)))
        # docs/concepts.md#fact-side-network: N(0, 0.01^2), zero bias
        for proj in (self.embed_down, *self.downs):
            nn.init.normal_(proj.weight, std=0.01)
            nn.init.zeros_(proj.bias)
        self._taps: dict[int, torch.Tensor] | None = None
        self.checkpointing, self._checkpoint_on, self._wrapped = False, False, False
        if not ladders:  # side-tuning / the pruned side network: the side reads the embedding output only
            self.tap_layers = []
            return
        for j, layer in enumerate(self.layers):
            layer.register_forward_pre_hook(functools.partial(self._ladder, j), with_kwargs=True)
        self.set_checkpointing(checkpointing)

    def set_checkpointing(self, on: bool) -> None:
        """Switch activation checkpointing of the side layers on or off (LST's ladders only)."""
        if on and not self._wrapped:
            # torch's checkpoint has no hook form: each layer's own forward is wrapped, once; while checkpointing
            # is off the wrapper calls the forward straight through
            for j, layer in enumerate(self.layers):
                layer.forward = functools.partial(self._checkpointed, j, layer.forward)
            self._wrapped = True
        self.checkpointing = on

    def recomputes(self, cache) -> bool:
        """Whether a forward with this key/value ``cache`` (None: none) runs under activation checkpointing: only
        when it is on, in training, with a backward to follow, and without a cache (recomputing a layer would
        append to the cache twice). Re-entry's re-run backbone layers follow the same rule."""
        return self.checkpointing and self.training and torch.is_grad_enabled() and cache is None

    @property
    def layers(self) -> nn.ModuleList:
        return get_path(self.trunk, self.spec.layers)

    @property
    def final_norm(self) -> nn.Module | None:
        return get_path(self.trunk, self.spec.final_norm) if self.spec.final_norm else None

    def gate_values(self) -> torch.Tensor:
        """mu_i for every backbone layer (those of dropped layers are unused)."""
        return torch.sigmoid(self.gates / self.temperature)

    def _tap(self, j: int) -> torch.Tensor | PackedTap:
        if self._taps is None:
            raise RuntimeError("a side layer ran outside SideStack.forward: it has no backbone taps to read")
        return _as_read(self._taps[self.kept[j]], self.downs[j].weight)

    def _mix(self, j: int, hidden: torch.Tensor, tap: torch.Tensor | PackedTap) -> torch.Tensor:
        mu = torch.sigmoid(self.gates[self.kept[j]] / self.temperature)
        return mu * hidden + (1 - mu) * per_token(self.downs[j], tap)  # (B, T, d/r)

    def _ladder(self, j: int, module: nn.Module, args: tuple, kwargs: dict):
        if self._checkpoint_on:  # the checkpointed forward mixes inside the checkpoint
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        mixed = self._mix(j, hidden, self._tap(j))
        if args:
            return (mixed, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": mixed}

    def _checkpointed(self, j: int, forward, *args, **kwargs):
        """Side layer j's forward under activation checkpointing: mix + layer recomputed in the backward."""
        if not self._checkpoint_on:
            return forward(*args, **kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")

        def run(hidden: torch.Tensor, tap: torch.Tensor):
            mixed = self._mix(j, hidden, tap)
            # the recomputation in the backward draws the same masks
            with fast_cpu_dropout(self.training, mixed.device):
                return forward(mixed, *args[1:], **kwargs) if args else forward(hidden_states=mixed, **kwargs)

        # non-reentrant: kwargs and the closure's tensors (masks, rotary tables, T5's position bias) are saved and
        # get gradients as usual; the RNG state is restored, so the recomputed dropout masks are the same.
        return checkpoint(run, hidden, self._tap(j), use_reentrant=False)

    def forward(
        self, taps: dict[int, torch.Tensor | PackedTap], attention_mask: torch.Tensor | None = None, **kwargs
    ):
        """Run the side trunk on the backbone's taps.

        Args:
            taps: from :func:`record_taps` over the matching backbone stack, or from a tap cache as
                :class:`~laddertune.core.packed_tap.PackedTap` objects (the down-projections run on their rows).
            attention_mask: the 2D padding mask of the stack's tokens, or None.
            **kwargs: passed to the trunk (``encoder_hidden_states``, the cache, ``position_ids``...).

        Returns:
            The trunk's output (``last_hidden_state``, and the cache when caching).
        """
        embeds = per_token(self.embed_down, _as_read(taps[EMBED], self.embed_down.weight))  # (B, T, d/r)
        if self._accepts is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in self._accepts}
        self._taps = taps
        self._checkpoint_on = self.recomputes(kwargs.get(CACHE))
        if self._returns_tuples:  # MPNetEncoder returns a tuple unless asked (return_dict=False by default)
            kwargs["return_dict"] = True
        try:
            with fast_cpu_dropout(self.training, embeds.device):  # the side's CPU dropout masks
                # a bare encoder that expands the 2D mask itself (DeBERTa-v2)
                if self.family.side_mask == "raw":
                    return as_output(self.trunk(embeds, attention_mask=attention_mask, **kwargs))
                # a bare encoder module: build its mask as its model would
                if self.family.side_mask == "bidirectional":
                    from transformers.masking_utils import create_bidirectional_mask

                    mask = create_bidirectional_mask(
                        config=self.trunk_config, inputs_embeds=embeds, attention_mask=attention_mask
                    )
                    return as_output(self.trunk(embeds, attention_mask=mask, **kwargs))
                return as_output(self.trunk(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs))
        finally:
            self._taps, self._checkpoint_on = None, False


def as_output(out):
    """A stack's output with ``last_hidden_state`` (and its cache): a ``ModelOutput`` as it is; a tuple
    (a stack that returns one, or a model whose config says ``return_dict=False``) as ``(hidden states, cache?,
    ...)``, the layout transformers' tuples have."""
    if not isinstance(out, tuple) or isinstance(out, ModelOutput):
        return out
    cache = out[1] if len(out) > 1 and isinstance(out[1], Cache) else None
    return BaseModelOutputWithPast(last_hidden_state=out[0], **{CACHE: cache})


def _as_read(tap: torch.Tensor | PackedTap, weight: torch.Tensor) -> torch.Tensor | PackedTap:
    """A tap as a down-projection with ``weight`` reads it: on the weight's device (a caller that moves only plain
    tensors, such as transformers' ``Trainer``, leaves a tap cache's packed taps where they were read), in its
    compute dtype."""
    return tap.to(weight.device, _compute_dtype(weight))


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a down-projection computes in: autocast's when it is on (a bf16 tap then stays bf16 instead of
    being copied to float32 and back), else the weight's."""
    device = weight.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


class SideNetwork(nn.Module):
    """Everything trainable: one :class:`SideStack` per backbone stack, the up-projection, a new task head."""

    def __init__(self, backbone: nn.Module, family: Family, config: LadderConfig, head: str) -> None:
        super().__init__()
        settings = dict(
            reduction_factor=config.reduction_factor,
            side_layers=config.side_layers,
            side_layer_stride=config.side_layer_stride,
            gate_temperature=config.gate_temperature,
            gate_init=config.gate_init,
            attn_implementation=config.attn_implementation,
            ladders=config.variant.ladders,
            checkpointing=config.side_checkpointing,
            dropout=config.side_dropout,
            attention_dropout=config.side_attention_dropout,
            attention_heads=config.side_attention_heads,
            tap_projection=config.tap_projection or "none",
            tap_rank=config.tap_rank,
        )
        self.stacks = nn.ModuleDict(
            {s.name: SideStack(family, s, backbone, **settings) for s in family.stacks}
        )
        # saved resolved, as the number the side network was built with
        if config.side_attention_heads is None:
            first = next(iter(self.stacks.values()))
            config.side_attention_heads = getattr(first.trunk_config, family.heads)
        width = getattr(backbone.config, family.width)
        self.up = nn.Linear(width // config.reduction_factor, width)
        nn.init.normal_(self.up.weight, std=0.01)
        nn.init.zeros_(self.up.bias)
        if config.final_shortcut:
            # The head reads backbone_final + Up(side): a zero Up makes step 0 the backbone's own head on its final
            # state (a linear probe through the pretrained pooler), and the side network adds on top of it.
            nn.init.zeros_(self.up.weight)
            # the stack whose final state the head reads: an encoder-decoder LM's decoder, else the first
            reader = "decoder" if head == "seq2seq_lm" else next(iter(self.stacks))
            for name, stack in self.stacks.items():
                if stack.projection is None:  # the last layer's tap is the final state
                    stack.tap_layers = sorted({*stack.tap_layers, stack.num_backbone_layers - 1})
                elif name == reader:  # projected taps: the final state is a full-width tap of its own
                    stack.tap_layers = sorted({*stack.tap_layers, FINAL})
        # QST's learned mix of the two (LadderConfig.final_gate): the backbone's share, starting at all of it
        self.final_gate = (
            nn.Parameter(torch.ones(())) if config.final_shortcut and config.final_gate else None
        )
        if head == "sequence_classification":
            # Deep copies: the backbone's own (newly initialised) head stays untouched and frozen.
            self.head = nn.Sequential(*(_head_module(backbone, p) for p in family.cls_head)).float()
            self.head.requires_grad_(True)

    def with_final(self, up: torch.Tensor, final: torch.Tensor | None) -> torch.Tensor:
        """The head's input from the up-projected side output ``up`` and, with the final shortcut, the backbone's
        final state ``final`` (same shape): their sum, or the learned mix ``a * final + (1 - a) * up``."""
        if final is None:
            return up
        final = final.to(up)
        if self.final_gate is None:
            return up + final
        gate = self.final_gate.to(up.dtype)
        return gate * final + (1 - gate) * up


def _head_module(backbone: nn.Module, path: str) -> nn.Module:
    """A trainable copy of a head module; ``@relu`` / ``@tanh``: an activation the head calls as a function."""
    if path.startswith("@"):
        return {"@relu": nn.ReLU, "@tanh": nn.Tanh}[path]()
    return copy.deepcopy(get_path(backbone, path))
