"""Generation metrics on hand-made cases with golden values."""

from __future__ import annotations

import pytest

from laddertune.data import compute_generation_metrics, normalize_answer, token_f1


def test_normalisation():
    assert normalize_answer("  Paris.\n") == "paris"
    assert normalize_answer("New   York City!?") == "new york city"
    assert normalize_answer("U.S.") == "u.s"
    assert normalize_answer("3.5") == "3.5"


def test_token_f1():
    assert token_f1("the cat sat", "the cat sat on the mat") == pytest.approx(
        2 / 3
    )  # cat sat / cat sat on mat
    assert token_f1("The Cat!", "cat") == 1.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0 and token_f1("dog", "cat") == 0.0


def test_golden_metrics():
    predictions = ["Paris.", "the cat sat", "London", None]
    references = ["paris", "the cat sat on the mat", ["Berlin", "london"], "x"]
    out = compute_generation_metrics(predictions, references)
    assert out == pytest.approx(
        {
            "exact_match": 50.0,  # 1, 0, 1 (second answer), 0
            "f1": 100 * (1 + 2 / 3 + 1 + 0) / 4,
            "rougeL": 100 * (1 + 2 / 3 + 1 + 0) / 4,  # LCS 3 of 3 and 6 tokens: F = 2/3
            "score": 50.0,
        }
    )


def test_rouge_l_is_not_exact_match():
    out = compute_generation_metrics(["a b c d"], ["a x c d"])
    assert out["exact_match"] == 0.0 and out["rougeL"] == pytest.approx(75.0)  # LCS a c d: 3/4
    assert out["f1"] == pytest.approx(100 * 2 / 3)  # articles dropped: b c d vs x c d -> 2 of 3


def test_custom_metric_hook():
    def length_ratio(preds, refs):
        return {"length_ratio": sum(map(len, preds)) / sum(map(len, refs))}

    out = compute_generation_metrics(["ab", "c"], ["ab", "cd"], custom=length_ratio)
    assert out["length_ratio"] == pytest.approx(0.75) and out["score"] == 50.0
    with pytest.raises(ValueError, match="built-in metric's name"):
        compute_generation_metrics(["a"], ["a"], custom=lambda p, r: {"score": 1.0})
    with pytest.raises(ValueError, match="not a finite number"):
        compute_generation_metrics(["a"], ["a"], custom=lambda p, r: {"x": float("nan")})


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        compute_generation_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        compute_generation_metrics([], [])
    with pytest.raises(ValueError, match="no answer"):
        compute_generation_metrics(["a"], [[]])
