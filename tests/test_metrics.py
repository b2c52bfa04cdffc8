"""Metrics against numbers computed by hand (the working is in the comments)."""

from __future__ import annotations

import logging
import math

import pytest

from laddertune.data.metrics import compute_metrics, glue_average
from laddertune.data.tasks import TASKS, get_task, make_custom_spec


def test_matthews_by_hand():
    # refs 1 0 0 0 1, preds 1 1 0 0 1: TP=2 FP=1 TN=2 FN=0
    # MCC = (2*2 - 1*0) / sqrt((2+1)(2+0)(2+1)(2+0)) = 4 / 6
    out = compute_metrics(get_task("cola"), [1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert out["matthews_correlation"] == pytest.approx(400 / 6)
    assert out["score"] == out["matthews_correlation"]


def test_f1_accuracy_by_hand():
    # refs 1 1 1 0 0, preds 1 1 0 0 1: TP=2 FN=1 FP=1 TN=1
    # precision = recall = 2/3 -> F1 = 2/3; accuracy = 3/5; score = (66.67 + 60) / 2
    out = compute_metrics(get_task("mrpc"), [1, 1, 0, 0, 1], [1, 1, 1, 0, 0])
    assert out["f1"] == pytest.approx(200 / 3)
    assert out["accuracy"] == pytest.approx(60.0)
    assert out["score"] == pytest.approx((200 / 3 + 60) / 2)


def test_unparsable_counts_as_wrong_on_binary_f1():
    # the None (ref 1) becomes 0, a false negative: TP=1 FN=1 FP=1 TN=1 -> F1 = 1/2, accuracy = 1/2
    out = compute_metrics(get_task("qqp"), [1, None, 0, 1], [1, 1, 0, 0])
    assert out == pytest.approx({"f1": 50.0, "accuracy": 50.0, "score": 50.0})
    # a None on a negative reference is wrong too (becomes 1, a false positive): accuracy 1/2, F1 = 2*1/(2*1+1+0)
    out = compute_metrics(get_task("qqp"), [1, None], [1, 0])
    assert out["accuracy"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(200 / 3)


def test_unparsable_counts_as_wrong_on_multiclass_and_matthews():
    out = compute_metrics(get_task("mnli"), [0, None, 2, 1], [0, 1, 2, 2])
    assert out == pytest.approx({"accuracy": 50.0, "score": 50.0})
    # cola: None on ref 1 -> 0. refs 1 0 1 0, preds 1 0 0 0: TP=1 TN=2 FN=1 FP=0
    # MCC = (1*2 - 0) / sqrt(1 * 2 * 2 * 3) = 2 / sqrt(12)
    out = compute_metrics(get_task("cola"), [1, 0, None, 0], [1, 0, 1, 0])
    assert out["score"] == pytest.approx(100 * 2 / math.sqrt(12))


def test_pearson_spearman_by_hand():
    # preds 1 2 3, refs 1 2 5: deviations (-1, 0, 1) and (-5/3, -2/3, 7/3)
    # Pearson = 4 / sqrt(2 * 78/9) = 0.960769...; ranks agree -> Spearman = 1
    out = compute_metrics(get_task("stsb"), [1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    pearson = 4 / math.sqrt(2 * 78 / 9)
    assert out["pearson"] == pytest.approx(100 * pearson)
    assert out["spearman"] == pytest.approx(100.0)
    assert out["score"] == pytest.approx((100 * pearson + 100) / 2)


def test_unparsable_regression_counts_as_zero():
    # None -> 0.0: preds 0 2 3 vs refs 1 2 3; deviations (-5/3, 1/3, 4/3) and (-1, 0, 1)
    # Pearson = 3 / sqrt(42/9 * 2) = 0.98198...
    out = compute_metrics(get_task("stsb"), [None, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert out["pearson"] == pytest.approx(100 * 3 / math.sqrt(84 / 9))
    assert out["spearman"] == pytest.approx(100.0)


def test_constant_predictions_give_zero_with_warning_not_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="laddertune.data.metrics"):
        out = compute_metrics(get_task("stsb"), [2.0, 2.0, 2.0], [1.0, 2.0, 4.0])
    assert out == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
    assert "constant predictions" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="laddertune.data.metrics"):
        out = compute_metrics(get_task("cola"), [1, 1, 1], [1, 0, 1])
    assert out["score"] == 0.0
    assert "undefined" in caplog.text


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_reports_score(task):
    spec = TASKS[task]
    refs = [0.0, 2.5, 5.0, 1.0] if spec.is_regression else [0, 1, 1, 0]
    out = compute_metrics(spec, refs, refs)
    assert out["score"] == pytest.approx(100.0)
    assert all(isinstance(v, float) for v in out.values())


def test_custom_specs_pick_their_metric():
    assert set(compute_metrics(make_custom_spec("t", num_labels=3), [0, 1, 2], [0, 1, 1])) == {
        "accuracy",
        "score",
    }
    reg = compute_metrics(make_custom_spec("t", num_labels=1), [0.1, 0.5, 0.9], [0.2, 0.4, 1.0])
    assert set(reg) == {"pearson", "spearman", "score"}


def test_bad_lengths_and_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        compute_metrics(get_task("rte"), [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics(get_task("rte"), [], [])


def test_glue_average(caplog):
    full = {task: float(i) for i, task in enumerate(TASKS)}  # 0..7 -> mean 3.5
    assert glue_average(full) == pytest.approx(3.5)
    with caplog.at_level(logging.WARNING, logger="laddertune.data.metrics"):
        assert glue_average({"rte": 70.0, "cola": {"score": 60.0, "matthews_correlation": 60.0}}) == 65.0
    assert "missing" in caplog.text and "mnli" in caplog.text
    with pytest.raises(ValueError, match="no task scores"):
        glue_average({})
    with pytest.raises(ValueError, match="not a finite number"):
        glue_average({"rte": float("nan")})
