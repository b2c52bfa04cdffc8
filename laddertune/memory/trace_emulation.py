"""What the memory predictor changes while it traces: fake-tensor-friendly modules and CUDA's allocation habits.

Each piece is a context manager that patches one attribute for the duration of the trace and restores it exactly;
:func:`tap_hooks` marks LST's ladder taps as the backbone makes them. See :mod:`laddertune.memory.predict`.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ..core.architectures import layer_modules
from ..errors import ConfigError
from .mem_tracker_compat import mem_tracker_api

CUDA_BLOCK = 512  # bytes: the CUDA caching allocator's rounding
TESTED_TRANSFORMERS = "5.17 to 5.25"  # benchmarks/results/dependency_ranges.md


@contextlib.contextmanager
def patched(owner, attr: str, value):
    """Set ``owner.attr = value`` for the duration of the block (the trace), then restore it exactly."""
    missing = object()
    saved = owner.__dict__.get(attr, missing)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        if saved is missing:
            delattr(owner, attr)
        else:
            setattr(owner, attr, saved)


def fake_friendly_modules() -> contextlib.ExitStack:
    """Let model-building code run on fake parameters.

    - ``Module._apply`` (behind ``.to``, ``.float()``...) swaps parameter tensors in place, which fails on fake
      tensors (``swap_tensors``: weak references); PEFT calls ``.to`` on the base model. During the trace it
      replaces the parameters instead, keeping ties; a conversion that changes nothing leaves them as they are.
    - ``copy.deepcopy`` of a fake tensor gives a tensor of a NEW fake mode, which then fails as "Mixing fake modes"
      (PEFT's ``modules_to_save`` and LST's classification head are deep copies): clone in the same mode instead.
    """
    from torch._subclasses.fake_tensor import FakeTensor

    def _apply(self, fn, recurse=True):
        converted: dict[int, torch.Tensor] = {}  # id -> converted tensor, so tied weights stay tied
        for module in self.modules() if recurse else [self]:
            for store in (module._parameters, module._buffers):
                for name, t in store.items():
                    if t is not None and id(t) not in converted:
                        with torch.no_grad():
                            new = fn(t)
                        if new is not t and isinstance(t, nn.Parameter):
                            new = nn.Parameter(new, requires_grad=t.requires_grad)
                        converted[id(t)] = new
                    if t is not None:
                        store[name] = converted[id(t)]
        return self

    def deepcopy(self, memo):
        if id(self) not in memo:
            with torch.no_grad():
                new = self.clone()
            if getattr(self, "_is_param", False):
                new = nn.Parameter(new, requires_grad=self.requires_grad)
            memo[id(self)] = new
        return memo[id(self)]

    stack = contextlib.ExitStack()
    stack.enter_context(patched(nn.Module, "_apply", _apply))
    stack.enter_context(patched(FakeTensor, "__deepcopy__", deepcopy))
    return stack


class _NeverDrops:
    """A LayerDrop probability of 0 that compares without reading a tensor's value: ``draw < p`` is False.

    Not a float: ``Tensor.__lt__`` takes a float and makes a fake bool; it declines any other object, so Python
    asks ``p > draw``, answered here.
    """

    def __gt__(self, other) -> bool:
        return False

    def __float__(self) -> float:
        return 0.0


def no_layerdrop_draws(model: nn.Module) -> contextlib.ExitStack:
    """Let a trace pass LayerDrop's skip test in layers whose LayerDrop probability is 0.

    transformers before 5.23 draws ``torch.rand([]) < self.layerdrop`` in every training forward of BART-style
    encoders and decoders, even when the probability is 0 (5.23 first tests ``self.layerdrop > 0.0``); under fake
    tensors the comparison has no value to branch on. During the trace a probability of 0 is an object that
    answers False to both tests, so the layer always runs, as it does on real data; the draw itself still happens.
    """
    stack = contextlib.ExitStack()
    for module in model.modules():
        if type(getattr(module, "layerdrop", None)) is float and module.layerdrop == 0.0:
            stack.enter_context(patched(module, "layerdrop", _NeverDrops()))
    return stack


def cuda_dropout():
    """Dropout as CUDA runs it: ``native_dropout``, which keeps a bool mask (1 byte/element) for backward."""
    original = nn.functional.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0.0 or p == 1.0 or input.numel() == 0:
            return original(input, p, training, inplace)
        out = torch.ops.aten.native_dropout(input, p, True)[0]
        return input.copy_(out) if inplace else out

    return patched(nn.functional, "dropout", dropout)


def cuda_block_rounding():
    """Count every storage as the CUDA caching allocator does: rounded up to 512 bytes."""

    def rounded(self) -> int:
        return math.ceil(self.size * self.element_size / CUDA_BLOCK) * CUDA_BLOCK

    return patched(mem_tracker_api().WeakRefInfo, "_calculate_mem_consumed", rounded)


def tap_hooks(model: nn.Module, add_taps) -> list:
    """Hooks that mark LST's ladder taps as soon as the backbone makes them (``add_taps(tensors)``).

    A tap is the input of backbone layer 0 (the embedding output) or the output of a kept layer, the rule of
    :func:`laddertune.core.side_network.record_taps`, or with projected taps the projection's output; the inputs of the down-projections are marked too (the same
    storages, unless a dtype cast copies them). Marked at birth, a tap alive at a peak inside the backbone's
    forward counts as a tap, not as an activation. Returns the hook handles; an empty list for other methods.
    """

    side = getattr(model, "side", None)
    if side is None or not hasattr(side, "stacks"):
        return []

    def take_input(module, args, kwargs):  # layer 0's input: the embedding output
        add_taps([args[0] if args else kwargs.get("hidden_states")])

    def take_output(module, args, output):  # a kept layer's output
        add_taps([output[0] if isinstance(output, tuple | list) else output])

    def take_projection_input(module, args):
        add_taps(args)

    def take_projected(module, args, output):  # a projected tap, as it is kept
        add_taps([output])

    handles = []
    for stack in side.stacks.values():
        if stack.projection is not None:  # the full-width states are the backbone's transients
            handles.append(stack.projection.register_forward_hook(take_projected))
            continue
        layers = layer_modules(model.backbone, stack.spec)  # a shared block (ALBERT) is hooked once
        handles.append(layers[0].register_forward_pre_hook(take_input, with_kwargs=True))
        handles += [
            m.register_forward_hook(take_output)
            for m in {id(layers[i]): layers[i] for i in stack.kept}.values()
        ]
        handles += [
            p.register_forward_pre_hook(take_projection_input) for p in (stack.embed_down, *stack.downs)
        ]
    return handles


def no_padding_masks() -> contextlib.ExitStack:
    """Let transformers drop the attention masks of an unpadded batch, as it does on real data.

    With an all-ones ``attention_mask`` transformers passes no mask to SDPA (``is_causal=True`` for a decoder: the
    flash kernel on CUDA), but it cannot read a fake mask's values, so it would build a (B, 1, T, T) mask that every
    layer's SDPA then keeps. The predictor's batches are never padded (:func:`make_batch`), so a fake padding mask
    is all ones: it is passed to transformers' skip tests as ``None``.
    """
    import transformers
    from torch._subclasses.fake_tensor import is_fake
    from transformers import masking_utils

    stack = contextlib.ExitStack()
    for name in ("_ignore_causal_mask_sdpa", "_ignore_bidirectional_mask_sdpa"):
        original = getattr(masking_utils, name, None)  # private: present in every tested transformers
        if original is None:
            stack.close()
            raise ConfigError(
                f"the memory predictor needs transformers' masking_utils.{name} (tested: transformers "
                f"{TESTED_TRANSFORMERS}); transformers {transformers.__version__} has none (training is not affected)"
            )

        def skip_test(padding_mask, *args, _original=original, **kwargs):
            if padding_mask is not None and is_fake(padding_mask):
                padding_mask = None
            return _original(padding_mask, *args, **kwargs)

        stack.enter_context(patched(masking_utils, name, skip_test))
    return stack


# sequence classifiers whose forward gathers the </s> tokens with a boolean mask (data-dependent)
EOS_POOLED_CLASSIFIERS = ("BartForSequenceClassification", "MBartForSequenceClassification")


def traceable_eos_pooling() -> contextlib.ExitStack:
    """BART's and mBART's sequence classifiers with their ``</s>`` pooling by index, which a trace can follow.

    Their ``forward`` checks that every row has as many ``</s>`` as the others (``torch.unique_consecutive``) and
    gathers them with a boolean mask (``hidden_states[eos_mask, :]``): both need token values, which fake tensors
    do not have (a fake ``input_ids`` built with one ``</s>`` per row still has none). During the trace ``forward``
    is this one: the same base model (encoder AND decoder, no cache, as with labels), the same classification
    head and loss; only the last ``</s>`` of each row is taken by index (``pool("eos")``, LST's own pooling). With
    one ``</s>`` per row, as GLUE inputs have, both select the same (B, d) rows, and their backwards both scatter
    into a zero (B, T, d) gradient; the boolean gather keeps (B,) int64 indices per dim, the index gather its (B,)
    positions. tests/test_memory.py checks the prediction against a real CPU run of the ORIGINAL forward.
    """
    import transformers
    from transformers.loss.loss_utils import ForSequenceClassificationLoss
    from transformers.modeling_outputs import SequenceClassifierOutput

    from ..core.pooling import pool

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k not in ("return_dict", "use_cache")}
        hidden = self.model(input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)[
            0
        ]  # (B, T, d)
        pooled = pool("eos", hidden, input_ids, attention_mask, self.config.eos_token_id)  # (B, d)
        logits = self.classification_head(pooled)
        loss = None if labels is None else ForSequenceClassificationLoss(labels, logits, self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    stack = contextlib.ExitStack()
    for name in EOS_POOLED_CLASSIFIERS:
        stack.enter_context(patched(getattr(transformers, name), "forward", forward))
    return stack
