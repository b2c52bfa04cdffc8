"""GLUE metrics, x100 as in the paper (reference §4), with ``score`` = the task's main number.

CoLA: Matthews correlation. SST-2, QNLI, RTE, MNLI (and custom classification): accuracy. MRPC, QQP: mean of F1
(positive class 1) and accuracy. STS-B (and custom regression): mean of Pearson and Spearman correlation.

Unparsable text-to-text outputs arrive as ``None`` and count as wrong: for classification a ``None`` becomes a
class that differs from the reference (the other class on binary tasks, so F1 and Matthews see a real error;
``-1`` otherwise); for regression it becomes ``0.0``, the bottom of the STS-B scale. A correlation that is
undefined (constant predictions or references) is reported as 0.0 with a logged warning, never NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tasks import TASKS, TaskSpec

logger = logging.getLogger(__name__)

REGRESSION_FALLBACK = 0.0  # the value an unparsable regression prediction counts as


def _classes(spec: TaskSpec, predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray]:
    refs = np.asarray([int(r) for r in references], dtype=np.int64)
    preds = np.empty(len(refs), dtype=np.int64)
    for i, (p, r) in enumerate(zip(predictions, refs, strict=True)):
        if p is None:
            preds[i] = 1 - r if spec.num_labels == 2 else -1
        else:
            preds[i] = int(p)
    return preds, refs


def _correlation(fn, preds: np.ndarray, refs: np.ndarray, name: str) -> float:
    reason = None
    if len(preds) < 2:
        reason = "fewer than 2 values"
    elif np.ptp(preds) == 0:
        reason = "constant predictions"
    elif np.ptp(refs) == 0:
        reason = "constant references"
    value = float("nan") if reason else float(fn(preds, refs)[0])
    if math.isnan(value):
        logger.warning("%s is undefined (%s); reporting 0.0", name, reason or "NaN")
        return 0.0
    return value


def compute_metrics(spec: TaskSpec, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Score predictions against references, x100.

    Args:
        spec (TaskSpec): the task; ``spec.metric`` picks the metric.
        predictions (Sequence): class ids, or floats for regression; ``None`` for an unparsable output.
        references (Sequence): the gold labels.

    Returns:
        dict[str, float]: the metric(s) and ``score``, e.g. ``{"f1": 88.0, "accuracy": 84.0, "score": 86.0}``.

    Raises:
        ValueError: empty inputs, or predictions and references of different lengths.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if len(references) == 0:
        raise ValueError("no predictions to score")
    if spec.metric == "pearson_spearman":
        preds = np.asarray(
            [REGRESSION_FALLBACK if p is None else float(p) for p in predictions], dtype=np.float64
        )
        refs = np.asarray(references, dtype=np.float64)
        pearson = 100 * _correlation(stats.pearsonr, preds, refs, "Pearson correlation")
        spearman = 100 * _correlation(stats.spearmanr, preds, refs, "Spearman correlation")
        return {"pearson": pearson, "spearman": spearman, "score": (pearson + spearman) / 2}
    preds, refs = _classes(spec, predictions, references)
    accuracy = 100 * float(accuracy_score(refs, preds))
    if spec.metric == "matthews":
        if np.ptp(preds) == 0 or np.ptp(refs) == 0:
            logger.warning("Matthews correlation is undefined (a constant column); reporting 0.0")
        mcc = 100 * float(matthews_corrcoef(refs, preds))  # sklearn returns 0.0 when undefined
        return {"matthews_correlation": mcc, "score": mcc}
    if spec.metric == "f1_accuracy":
        f1 = 100 * float(f1_score(refs, preds, pos_label=1, average="binary", zero_division=0))
        return {"f1": f1, "accuracy": accuracy, "score": (f1 + accuracy) / 2}
    return {"accuracy": accuracy, "score": accuracy}


def glue_average(scores: Mapping[str, float | Mapping[str, float]]) -> float:
    """The GLUE score: the mean of the tasks' ``score`` (reference §4: the mean over the 8 tasks).

    Args:
        scores (Mapping[str, float | Mapping[str, float]]): task -> score, or task -> a
            :func:`compute_metrics` result.

    Returns:
        float: the mean; a warning is logged when tasks of the 8 are missing or unknown ones are present.

    Raises:
        ValueError: no scores, or a value that is not a finite number.
    """
    if not scores:
        raise ValueError("no task scores to average")
    values = []
    for task, value in scores.items():
        value = value["score"] if isinstance(value, Mapping) else value
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"score of {task!r} is not a finite number: {value!r}")
        values.append(float(value))
    missing = sorted(set(TASKS) - set(scores))
    extra = sorted(set(scores) - set(TASKS))
    if missing or extra:
        logger.warning(
            "GLUE average over %d task(s); missing: %s; not GLUE: %s",
            len(values),
            ", ".join(missing) or "none",
            ", ".join(extra) or "none",
        )
    return sum(values) / len(values)
