"""Vision-and-language metrics, x100 with a ``score`` key (paper Table 3): VQA, GQA, NLVR2, COCO CIDEr.

* VQA v2: soft accuracy ``min(#annotators who gave the answer / 3, 1)`` over the (usually 10) answers.
* GQA: exact match against the single answer. NLVR2: accuracy of ``true`` / ``false``.
* COCO captions: CIDEr(-D) from pycocoevalcap (the COCO caption evaluation code). Its PTB tokenizer needs Java
  and Stanford CoreNLP, so captions are tokenized here by lower-casing and splitting off punctuation, which is
  what that tokenizer does to plain captions (it also drops the punctuation).

Answers are normalised as the VQA evaluation does for the simple cases: lower case, surrounding white space and a
final full stop removed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..errors import import_optional

_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """``' Yes.'`` -> ``'yes'``."""
    return text.strip().lower().rstrip(".").strip()


def vqa_soft_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """``min(#answers equal to the prediction / 3, 1)`` in [0, 1]."""
    p = normalize_answer(prediction)
    return min(sum(normalize_answer(a) == p for a in answers) / 3.0, 1.0)


def caption_tokens(text: str) -> str:
    """Lower case, punctuation removed, single spaces: the tokenized form CIDEr compares."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D (pycocoevalcap) of one caption per image against that image's references; not x100."""
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [caption_tokens(p)] for i, p in enumerate(predictions)}
    # pycocoevalcap comes with laddertune[vision]; imported here, the only place that needs it
    cider_module = import_optional("pycocoevalcap.cider.cider", "vision", "the CIDEr metric")
    score, _ = cider_module.Cider().compute_score(gts, res)
    return float(score)


def vl_metrics(metric: str, predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """Score generated text, x100.

    Args:
        metric: ``vqa`` (references: answer lists), ``exact_match`` (references: strings, GQA and NLVR2's
            ``true``/``false``) or ``cider`` (references: caption lists).
        predictions: decoded model outputs.
        references: as above, one per prediction.

    Returns:
        e.g. ``{"vqa_accuracy": 66.7, "score": 66.7}``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    if metric == "vqa":
        value = 100 * float(
            np.mean([vqa_soft_accuracy(p, a) for p, a in zip(predictions, references, strict=True)])
        )
        return {"vqa_accuracy": value, "score": value}
    if metric == "exact_match":
        hits = [
            normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True)
        ]
        value = 100 * float(np.mean(hits))
        return {"exact_match": value, "score": value}
    if metric == "cider":
        value = 100 * cider(predictions, references)
        return {"cider": value, "score": value}
    raise ValueError(f"unknown metric {metric!r}")
