"""The LM loss in sequence chunks, so that the full float32 logits and their gradient never exist at once.

With a 32k-128k vocabulary the (B, T, V) float32 logits are the largest tensors of a small side network's step
(Llama-7B's vocabulary of 32,000 at 4 x 2048 tokens: 1 GiB of logits, another for their gradient, more for the
softmax). Here only the positions that have a label are projected at all (an instruction's answer is a few tokens
of a long row: the LM head, a large share of a small side network's step, then runs on those alone), and the loss
is a sum over chunks of ``B * chunk`` of them; each chunk's projection + cross-entropy runs under
``torch.utils.checkpoint`` (non-reentrant), which keeps only its input, the (B * chunk, d_side) hidden states, and
recomputes that chunk's logits in the backward pass. Peak logits: (B * chunk, V) instead of (B, T, V).

The result equals the plain mean cross-entropy over non-ignored positions (``ForCausalLMLoss`` with shifted
labels, or T5's loss on unshifted labels); tests check value and gradients. Written by hand because neither torch
nor transformers has a chunked LM loss that takes an arbitrary projection (Liger's fused linear cross-entropy
takes only a plain weight matrix, and it is a CUDA/Triton dependency).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch._subclasses.fake_tensor import is_fake  # the memory predictor traces with fake tensors
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def chunked_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    project: Callable[..., torch.Tensor],
    chunk: int,
    shift: bool,
    final: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``project(hidden)`` against ``labels``, computed ``chunk`` positions at a time.

    Args:
        hidden: (B, T, d) the side network's last hidden states.
        labels: (B, T) target ids, -100 ignored.
        project: hidden (B, t, d) [, final (B, t, D)] -> float logits (B, t, V); its inputs are recomputed, not
            stored.
        chunk: positions per chunk.
        shift: causal LM (position t predicts label t+1, as ``ForCausalLMLoss``); False for seq2seq (T5).
        final: (B, T, D) the backbone's final hidden states (the LM head's final shortcut), chunked with
            ``hidden`` and passed to ``project``; no gradient flows into them.
    """
    if shift:  # (B, T): the label of position t is the token at t+1; the last position predicts nothing
        labels = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    labels = labels.to(hidden.device)
    step = chunk * hidden.shape[0]  # a chunk holds as many positions as `chunk` columns of the batch
    hidden, labels = hidden.flatten(0, 1), labels.flatten()  # (B*T, d), (B*T,)
    extra = () if final is None else (final.flatten(0, 1),)
    if not is_fake(labels):  # only the positions that have a label (a completion's few tokens of a long row)
        keep = (labels != IGNORE).nonzero().squeeze(-1)  # (N,)
        hidden, labels, extra = hidden[keep], labels[keep], tuple(e[keep] for e in extra)
    # (a trace without data keeps every position: the predictor's batches label every token)
    count = (labels != IGNORE).sum()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], step):
        parts = (hidden[start : start + step], labels[start : start + step], project)
        total = total + checkpoint(
            _chunk_loss, *parts, *(e[start : start + step] for e in extra), use_reentrant=False
        )
    return total / count  # NaN when nothing is labelled, as the plain mean is


def _chunk_loss(hidden: torch.Tensor, labels: torch.Tensor, project, *final: torch.Tensor) -> torch.Tensor:
    logits = project(hidden, *final).float()  # (n, V)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
