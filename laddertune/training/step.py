"""One optimisation step, and the error that stops a run whose loss or gradient is no longer finite."""

from __future__ import annotations

import torch

from ..errors import LadderTuneError
from .device import model_device
from .precision import Precision


class TrainingDivergedError(LadderTuneError):
    """The loss or the gradient became NaN or infinite; the run stopped and kept its last good checkpoint."""


def train_step(
    model,
    batch: dict,
    optimizer,
    scheduler,
    max_grad_norm: float,
    precision: Precision | None = None,
    forward=None,
) -> float:
    """One optimisation step; returns the loss. A NaN/inf loss or gradient raises :class:`TrainingDivergedError`
    before the optimizer touches the weights.

    With ``precision`` the forward runs under its autocast; with fp16's gradient scaler an overflowing gradient is
    the scaler's business (it skips the step, and with it the schedule's, and lowers the scale), not a divergence.
    ``forward(batch)``, when given, returns (loss to back-propagate, loss to report): data-parallel training's
    weighted local loss and the global batch's mean (:meth:`Distributed.forward_loss`).
    """
    precision = precision or Precision("fp32", model_device(model))
    with precision.autocast():
        loss, reported = forward(batch) if forward is not None else (model(**batch).loss,) * 2
    if not torch.isfinite(reported):
        raise TrainingDivergedError(f"the loss is {reported.item()}")
    precision.backward(loss)
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
    return reported.item()
