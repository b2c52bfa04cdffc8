"""The LM loss in sequence chunks, so that the full float32 logits and their gradient never exist at once.

With a 32k-128k vocabulary the (B, T, V) float32 logits are the largest tensors of a small side network's step
(Llama-7B's vocabulary of 32,000 at 4 x 2048 tokens: 1 GiB of logits, another for their gradient, more for the
softmax). Here only the positions that have a label are projected at all (an instruction's answer is a few tokens
of a long row: the LM head, a large share of a small side network's step, then runs on those alone). The trainable
part of the head, the up-projection plus the backbone's final state, runs once on those positions with ordinary
autograd; the frozen LM head then runs ``B * chunk`` positions at a time, and each chunk's gradient with respect to
its input is computed right there, in the forward pass, and kept until the backward pass scales it by the incoming
gradient. Peak logits: (B * chunk, V) instead of (B, T, V); the head's large matmul runs twice (logits, input
gradient), not three times as under activation checkpointing, which recomputes each chunk's logits in the backward
pass. This is what a frozen head allows: nothing of it needs a gradient, so the forward can finish its part of the
backward.

The result equals the plain mean cross-entropy over non-ignored positions (``ForCausalLMLoss`` with shifted
labels, or T5's loss on unshifted labels); tests check value and gradients. Written by hand because neither torch
nor transformers has a chunked LM loss that takes an arbitrary head (Liger's fused linear cross-entropy takes only a
plain weight matrix, not BART's logit bias or Gemma's soft cap, and it is a CUDA/Triton dependency).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch._subclasses.fake_tensor import is_fake  # the memory predictor traces with fake tensors
from torch.nn import functional as F

IGNORE = -100


def chunked_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head_input: Callable[..., torch.Tensor],
    head_logits: Callable[[torch.Tensor], torch.Tensor],
    chunk: int,
    shift: bool,
    final: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``head_logits(head_input(hidden, final))`` against ``labels``, ``chunk`` columns at a time.

    Args:
        hidden: (B, T, d) the side network's last hidden states.
        labels: (B, T) target ids, -100 ignored.
        head_input: hidden (N, d) [, final (N, D)] -> the LM head's input (N, D): the trainable part, differentiated
            by ordinary autograd.
        head_logits: (n, D) -> float logits (n, V): the frozen LM head; nothing in it may need a gradient.
        chunk: columns of the batch per chunk (a chunk holds ``B * chunk`` positions).
        shift: causal LM (position t predicts label t+1, as ``ForCausalLMLoss``); False for seq2seq (T5).
        final: (B, T, D) the backbone's final hidden states (the LM head's final shortcut), passed to
            ``head_input``; no gradient flows into them.
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
    z = head_input(hidden, *extra)  # (N, D)
    total = _FrozenHeadCrossEntropy.apply(z, labels, head_logits, step, z.requires_grad)
    return total / count  # NaN when nothing is labelled, as the plain mean is


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``head(z)``, chunk by chunk, its gradient with respect to ``z`` computed in the forward
    pass (the head is frozen, so that gradient is all the backward pass needs)."""

    @staticmethod
    def forward(ctx, z, labels, head, step, want_grad):
        total = torch.zeros((), dtype=torch.float32, device=z.device)
        grad = torch.empty_like(z) if want_grad else None
        for start in range(0, z.shape[0], step):
            piece = z[start : start + step].detach().requires_grad_(want_grad)
            # a Function's forward runs without autograd; this chunk's head needs it
            with torch.enable_grad():
                target = labels[start : start + step]
                # the (n, V) logits are not kept in a name: the cross-entropy keeps only its log-softmax
                loss = _cross_entropy(head(piece), target)
            if want_grad:
                (grad[start : start + step],) = torch.autograd.grad(loss, piece)
            total = total + loss.detach().to(total.device)
            del loss  # this chunk's graph goes before the next chunk's is made
        ctx.save_for_backward(*(() if grad is None else (grad,)))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None, None


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target.to(logits.device), ignore_index=IGNORE, reduction="sum")
