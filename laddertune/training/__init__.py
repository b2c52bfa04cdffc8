"""Runs: the training loop, the run's config, its resumable checkpoints and its results.

:class:`TrainConfig` (``train_config.json``), :func:`train` (the explicit loop, read as its phases),
:func:`evaluate` (a saved checkpoint on the validation and test splits), :func:`predict_file` and
:func:`load_predictor` (a checkpoint on new text, from its ``task.json``), the run folder's checkpoints with their
optimizer, scheduler, RNG and data-order state (:mod:`.checkpoint`), and ``results.json`` (:mod:`.results`).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "epoch_batches": ".build",
    "BASELINE_WEIGHTS": ".checkpoint",
    "STATE_JSON": ".checkpoint",
    "STATE_TENSORS": ".checkpoint",
    "checkpoint_candidates": ".checkpoint",
    "TrainConfig": ".config",
    "evaluate": ".evaluation",
    "format_metrics": ".evaluation",
    "train": ".loop",
    "Predictor": ".prediction",
    "load_predictor": ".prediction",
    "predict_file": ".prediction",
    "TrainingDivergedError": ".step",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
