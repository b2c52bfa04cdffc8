"""Importance scores that choose which backbone rows initialise the side network (LST paper, section 3.3).

Two scores, one tensor per parameter, keyed by ``model.named_parameters()`` names (a tied weight appears once,
under its first name, e.g. T5's ``shared.weight``), fp32, on the parameter's device:

- :func:`magnitude_importance`: ``|W|``.
- :func:`fisher_importance`: the empirical Fisher information, the sum over N examples of each example's squared
  gradient of the gold-label loss, as the authors compute it (plain model, eval mode, fp32, batch size 1). The paper
  writes a mean; the sum only rescales every score by N and so keeps the same rows.

Batch-size-1 semantics, fast. A batch of one has no padding, so every example is cut out of its batch with its
padding removed (``attention_mask`` for the source side, ``decoder_attention_mask`` or trailing ``-100`` labels for
the target side; left or right padding alike), and its loss is the model's own token-mean over its own labels.
Examples of equal shape are then stacked into chunks and their per-example gradients computed at once with
``torch.func`` (``vmap(grad(functional_call))``), then squared and summed straight away. Because no example in a
chunk has padding, the attention mask passed inside ``vmap`` is a constant tensor of ones, which keeps Hugging Face's
mask-skipping checks (``mask.all()``) out of the vmapped path; this is what makes T5, BERT, Llama and GPT-2 vmappable.
For this phase only the model runs with ``eager`` attention (restored on return): SDPA's CPU kernel has no vmap
batching rule. Where ``vmap`` still fails (an op without a batching rule, data-dependent Python control flow), the
per-example loop (the same ``torch.func.grad``, one example at a time) takes over with a logged warning: same
numbers, slower. A chunk that runs out of memory is redone one example at a time.

Memory: gradients are taken with respect to detached copies of the parameters, so ``requires_grad`` on the frozen
backbone does not matter and no ``.grad`` is ever written. The peak extra memory is about
``chunk_size`` per-example gradients (``chunk_size`` times the fp32 model size) plus the fp32 result; all of it but
the result is freed before returning. The result is the size of the model in fp32: delete it once the side network
is initialised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ..errors import DataError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label padding of Hugging Face losses

# keys that run along the source sequence, and those that run along the target sequence of encoder-decoders
_SOURCE_KEYS = ("input_ids", "token_type_ids", "position_ids")
_TARGET_KEYS = ("decoder_input_ids", "labels")


def magnitude_importance(model: nn.Module) -> dict[str, Tensor]:
    """Weight magnitude ``|W|`` of every parameter (fp32, on the parameter's device)."""
    return {name: p.detach().abs().float() for name, p in model.named_parameters()}


def fisher_importance(
    model: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    num_examples: int = 1024,
    chunk_size: int = 8,
) -> dict[str, Tensor]:
    """Empirical Fisher information of every parameter: sum over examples of squared per-example gradients.

    Args:
        model: a Hugging Face model with a task head that returns ``.loss`` when given ``labels``; left unchanged
            (its train/eval flags and attention implementation are restored on return).
        batches: dicts of tensors as the model's ``forward`` takes them (``input_ids``, ``attention_mask``,
            ``labels``, ...), any batch size, padded any way; ``labels`` padded with -100. Shuffle them yourself:
            the first ``num_examples`` examples with at least one gold label are used.
        num_examples: how many examples to sum over (the authors use 1024).
        chunk_size: how many per-example gradients are held at once; memory grows with it.

    Returns:
        ``{name: fisher}`` for every ``model.named_parameters()`` name, fp32, on the parameter's device.

    Raises:
        DataError: a batch has no ``labels``, or no example has a gold label.
    """
    if num_examples < 1 or chunk_size < 1:
        raise ValueError("num_examples and chunk_size must be at least 1")
    named = dict(model.named_parameters())
    device = next(iter(named.values())).device
    # fp32 copies only where the model is in lower precision; otherwise detached views (no copy)
    params = {n: p.detach().float() if p.dtype != torch.float32 else p.detach() for n, p in named.items()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named.items()}
    is_encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))

    def loss_fn(params: dict[str, Tensor], buffers: dict[str, Tensor], example: dict[str, Tensor]) -> Tensor:
        batch = {k: v.unsqueeze(0) for k, v in example.items()}  # a batch of one
        if "input_ids" in batch:
            # constant (not vmapped) mask: nothing is padded, and HF may branch on mask.all()
            batch["attention_mask"] = torch.ones(batch["input_ids"].shape, dtype=torch.long, device=device)
        loss = functional_call(model, (params, buffers), args=(), kwargs=batch).loss
        if loss is None:
            raise DataError("the model returned no loss: Fisher importance needs batches with 'labels'")
        return loss

    per_example = grad(loss_fn)
    per_chunk = vmap(per_example, in_dims=(None, None, 0))
    state = {"vmap": True, "vmapped": 0}

    def accumulate(chunk: list[dict[str, Tensor]]) -> None:
        stacked = {k: torch.stack([ex[k] for ex in chunk]).to(device) for k in chunk[0]}
        if state["vmap"] and len(chunk) > 1:
            try:
                grads = per_chunk(params, buffers, stacked)  # {name: (C, *shape)}
            except torch.OutOfMemoryError:
                logger.warning(
                    "Fisher: out of memory for a chunk of %d; this chunk runs one by one", len(chunk)
                )
            except Exception as e:  # an op without a vmap rule, or data-dependent Python control flow
                logger.warning(
                    "Fisher: vmap failed for %s (%s); using the slower per-example loop (same numbers)",
                    type(model).__name__,
                    _first_line(e),
                )
                state["vmap"] = False
            else:
                for name in list(grads):
                    fisher[name].add_(grads.pop(name).square().sum(0))  # free each per-example buffer at once
                state["vmapped"] += len(chunk)
                return
        for i in range(len(chunk)):
            grads = per_example(params, buffers, {k: v[i] for k, v in stacked.items()})
            for name in list(grads):
                fisher[name].add_(grads.pop(name).square())

    start = time.perf_counter()
    count = 0
    with _importance_mode(model):
        buckets: dict[tuple, list[dict[str, Tensor]]] = {}
        for example in _examples(batches, is_encoder_decoder):
            key = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(example.items()))
            bucket = buckets.setdefault(key, [])
            bucket.append(example)
            count += 1
            if len(bucket) == chunk_size:
                accumulate(buckets.pop(key))
            if count == num_examples:
                break
        for bucket in buckets.values():
            accumulate(bucket)
        del buckets
    params.clear()  # drop the fp32 copies (if any) and the references
    buffers.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the per-example buffers back before training measures its peak
    if count == 0:
        raise DataError("Fisher importance: no example with a gold label (labels all -100 or no batches)")
    if count < num_examples:
        logger.warning(
            "Fisher importance from %d examples (%d asked for): the data ran out", count, num_examples
        )
    logger.info(
        "Fisher importance: %d examples (%d vmapped) in %.1fs",
        count,
        state["vmapped"],
        time.perf_counter() - start,
    )
    return fisher


def _examples(batches: Iterable[dict[str, Tensor]], is_encoder_decoder: bool) -> Iterator[dict[str, Tensor]]:
    """Cut batches into single examples without padding: what a batch of size one holds."""
    for batch in batches:
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 0}
        if "labels" not in tensors:
            raise DataError("Fisher importance needs gold labels: a batch has no 'labels'")
        source_mask = tensors.pop("attention_mask", None)
        target_mask = tensors.pop("decoder_attention_mask", None)
        source_keys = _SOURCE_KEYS if is_encoder_decoder else (*_SOURCE_KEYS, "labels")
        for i in range(len(tensors["labels"])):
            ex = {k: v[i] for k, v in tensors.items()}
            if source_mask is not None:
                _keep(ex, source_keys, source_mask[i].bool())
            if is_encoder_decoder:
                if target_mask is not None:
                    _keep(ex, _TARGET_KEYS, target_mask[i].bool())
                elif ex["labels"].dim() == 1:
                    # no target mask: trailing -100 labels are padding (decoder positions after them are
                    # causally invisible to earlier ones, so trimming them leaves the loss unchanged)
                    gold = (ex["labels"] != IGNORE_INDEX).nonzero()
                    length = int(gold[-1]) + 1 if len(gold) else 0
                    _keep(ex, _TARGET_KEYS, torch.arange(len(ex["labels"])) < length)
            labels = ex["labels"]
            if labels.dim() > 0 and not labels.is_floating_point() and not (labels != IGNORE_INDEX).any():
                continue  # nothing to predict: a batch of one would give a NaN loss
            yield ex


def _keep(example: dict[str, Tensor], keys: Iterable[str], keep: Tensor) -> None:
    """Keep positions ``keep`` (a bool vector) of the sequence tensors ``keys`` of one example, in place."""
    for k in keys:
        v = example.get(k)
        if v is not None and v.shape[:1] == keep.shape and not v.is_floating_point():
            example[k] = v[keep.to(v.device)]


@contextmanager
def _importance_mode(model: nn.Module):
    """Eval mode and eager attention for the Fisher pass; restores every module's train flag and the attention."""
    modes = [(m, m.training) for m in model.modules()]
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None)
    model.eval()
    # eager attention is plain batched matmuls under vmap; SDPA's CPU kernel has no batching rule (a slow fallback)
    swap = attn not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if swap:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        if swap:
            model.set_attn_implementation(attn)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__
