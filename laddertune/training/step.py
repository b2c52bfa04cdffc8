"""One optimisation step (over one batch, or several micro-batches with gradient accumulation), and the error that
stops a run whose loss or gradient is no longer finite.

Gradient accumulation (``--gradient-accumulation-steps K``): an optimizer step runs K micro-batches of
``--batch-size`` and equals one step on their union. Each micro-batch's mean loss is weighted by its share of the
step's loss terms (examples for classification, target tokens for LM heads, counted over all K micro-batches and,
under data parallelism, all ranks), so the summed gradients are those of the mean loss over every term of the
step: what one large batch gives, also when micro-batches hold different numbers of target tokens. A plain mean
of the K micro-batch means would weight a short micro-batch's tokens more.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from ..errors import LadderTuneError
from .device import model_device
from .precision import Precision


class TrainingDivergedError(LadderTuneError):
    """The loss or the gradient became NaN or infinite; the run stopped and kept its last good checkpoint."""


def loss_terms(labels: torch.Tensor, head: str) -> torch.Tensor:
    """How many terms a batch's mean loss averages: examples (classification), target tokens (LM heads;
    causal LM losses shift the labels by one)."""
    if head == "sequence_classification":
        return torch.tensor(labels.shape[0])
    if head == "causal_lm":
        labels = labels[..., 1:]
    return (labels != -100).sum()


def train_step(
    model,
    batch: dict | list[dict],
    optimizer,
    scheduler,
    max_grad_norm: float,
    precision: Precision | None = None,
    *,
    head: str | None = None,
    distributed=None,
    move: Callable[[dict], dict] | None = None,
) -> float:
    """One optimizer step; returns its loss (the mean over all its loss terms). A NaN/inf loss or gradient raises
    :class:`TrainingDivergedError` before the optimizer touches the weights.

    Args:
        model: the model (with data parallelism, the unwrapped one; ``distributed.model`` runs the forward).
        batch: one batch, or the micro-batches of one step (gradient accumulation; see the module docstring).
        precision: the forward runs under its autocast; with fp16's gradient scaler an overflowing gradient is
            the scaler's business (it skips the step, and with it the schedule's, and lowers the scale), not a
            divergence.
        head: the backbone's head, which says what a loss term is; needed with several micro-batches or ranks.
        distributed: a :class:`~laddertune.training.distributed.Distributed` (data parallelism): the loss terms
            are counted over every rank, and gradients are all-reduced once, after the last micro-batch.
        move: applied to each micro-batch right before its forward (only one is on the device at a time).
    """
    precision = precision or Precision("fp32", model_device(model))
    batches = [batch] if isinstance(batch, dict) else list(batch)
    plain = len(batches) == 1 and distributed is None  # one batch, one process: its own mean loss
    if not plain:
        if head is None:
            raise ValueError("train_step needs the head to weight several micro-batches or ranks")
        counts = [loss_terms(b["labels"], head).double() for b in batches]
        total = torch.stack(counts).sum()
        if distributed is not None:
            total = distributed.sum(total)
        total = total.clamp(min=1)
        world = distributed.world_size if distributed is not None else 1
    forward = distributed.model if distributed is not None else model
    reported = 0.0
    for i, micro in enumerate(batches):
        micro = move(micro) if move is not None else micro
        last = i == len(batches) - 1
        # data parallelism: gradients are all-reduced in the last micro-batch's backward only
        with forward.no_sync() if distributed is not None and not last else nullcontext():
            with precision.autocast():
                loss = forward(**micro).loss
            if plain:
                part, scaled = loss.detach(), loss
            else:
                # this micro-batch's share of the step's mean loss (summed over ranks); DDP averages the ranks'
                # gradients, hence the factor ``world``
                part = loss.detach().double() * counts[i].to(loss.device)
                part = distributed.sum(part) if distributed is not None else part
                part = (part / total.to(part.device)).float()
                scaled = loss * (counts[i] * world / total).float().to(loss.device)
            if not torch.isfinite(part):
                optimizer.zero_grad(set_to_none=True)
                raise TrainingDivergedError(f"the loss is {part.item()}")
            precision.backward(scaled)
        reported = reported + part
    precision.unscale(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf"))
    if not torch.isfinite(norm) and precision.scaler is None:
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDivergedError(f"the gradient norm is {norm.item()}")
    # a step the fp16 scaler skipped does not advance the schedule (as accelerate)
    if precision.step(optimizer):
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(reported)
