"""Runs: the training loop, the run's config, its resumable checkpoints and its results.

:class:`TrainConfig` (``train_config.json``), :func:`train` (the explicit loop, read as its phases),
:func:`evaluate` (a saved checkpoint on the validation and test splits), :func:`predict_file` and
:func:`load_predictor` (a checkpoint on new text, from its ``task.json``), the run folder's checkpoints with their
optimizer, scheduler, RNG and data-order state (:mod:`.checkpoint`), and ``results.json`` (:mod:`.results`).
"""

from .build import epoch_batches
from .checkpoint import BASELINE_WEIGHTS, STATE_JSON, STATE_TENSORS, checkpoint_candidates
from .config import TrainConfig
from .evaluation import evaluate, format_metrics
from .loop import train
from .prediction import Predictor, load_predictor, predict_file
from .step import TrainingDivergedError

__all__ = [
    "BASELINE_WEIGHTS",
    "STATE_JSON",
    "STATE_TENSORS",
    "Predictor",
    "TrainConfig",
    "TrainingDivergedError",
    "checkpoint_candidates",
    "epoch_batches",
    "evaluate",
    "format_metrics",
    "load_predictor",
    "predict_file",
    "train",
]
