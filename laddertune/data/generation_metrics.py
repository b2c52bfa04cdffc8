"""Metrics for generated text, x100: exact match, SQuAD-style token F1, ROUGE-L; ``score`` = exact match.

- ``exact_match``: equal after :func:`normalize_answer`: strip, lowercase, collapse whitespace runs to one space,
  and strip trailing punctuation (``"Paris."`` matches ``"paris"``).
- ``f1``: SQuAD's token F1 (its own normalisation: lowercase, no punctuation, no articles a/an/the, single
  spaces); two empty answers score 1, one empty answer 0.
- ``rougeL``: the F-measure of ROUGE-L from the ``rouge-score`` package with its default tokenizer (lowercase,
  ASCII letters and digits only: text in other scripts scores 0), no stemming.

A reference may be a list of acceptable answers: each metric takes the best of them. A custom metric is a callable
``(predictions, references) -> dict[str, float]`` whose values are added (not x100) beside the others.
"""

from __future__ import annotations

import math
import numbers
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

__all__ = ["compute_generation_metrics", "normalize_answer", "token_f1"]

_PUNCT = string.punctuation
_ARTICLES = re.compile(r"\b(a|an|the)\b")

CustomMetric = Callable[[list[str], list], dict[str, float]]


def normalize_answer(text: str) -> str:
    """Exact match's normalisation: strip, lowercase, collapse whitespace, strip trailing punctuation."""
    return " ".join(text.lower().split()).rstrip(_PUNCT).rstrip()


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1 of one answer, in [0, 1]."""
    pred, ref = _squad_tokens(prediction), _squad_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def compute_generation_metrics(
    predictions: Sequence[str | None],
    references: Sequence[str | Sequence[str]],
    *,
    custom: CustomMetric | None = None,
) -> dict[str, float]:
    """Score generated answers against references.

    Args:
        predictions (Sequence[str | None]): the generated texts (``None`` counts as empty).
        references (Sequence[str | Sequence[str]]): per prediction, the answer or a list of acceptable answers.
        custom (CustomMetric | None): ``(predictions, references) -> {name: value}``, added to the result.

    Returns:
        dict[str, float]: ``exact_match``, ``f1``, ``rougeL`` (x100), ``score`` (= exact_match), and the custom
        metric's values.

    Raises:
        ValueError: empty inputs, different lengths, a reference with no answer, or a custom metric that returns
            something other than finite numbers or reuses a built-in name.
    """
    from rouge_score import rouge_scorer  # deferred: pulls nltk and absl

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if len(references) == 0:
        raise ValueError("no predictions to score")
    preds = ["" if p is None else p for p in predictions]
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not r for r in refs):
        raise ValueError("a reference holds no answer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    em = f1 = rouge = 0.0
    for p, answers in zip(preds, refs, strict=True):
        em += max(float(normalize_answer(p) == normalize_answer(a)) for a in answers)
        f1 += max(token_f1(p, a) for a in answers)
        rouge += max(scorer.score(a, p)["rougeL"].fmeasure for a in answers)
    n = len(preds)
    out = {"exact_match": 100 * em / n, "f1": 100 * f1 / n, "rougeL": 100 * rouge / n}
    out["score"] = out["exact_match"]
    if custom is not None:
        extra = custom(list(preds), list(references))
        for name, value in dict(extra).items():
            if name in out:
                raise ValueError(f"the custom metric returns {name!r}, a built-in metric's name")
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"the custom metric's {name!r} is not a finite number: {value!r}")
            out[name] = float(value)
    return out
