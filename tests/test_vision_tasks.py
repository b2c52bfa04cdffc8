"""VL tasks: metrics against hand-computed values, the two data layouts, and joint training through the loop."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T

from laddertune.errors import DataError
from laddertune.vision import VisionLadderModel, VisualConfig, grid_boxes
from laddertune.vision.metrics import vl_metrics, vqa_soft_accuracy
from laddertune.vision.synthetic import build, text_only_prior, word_tokenizer
from laddertune.vision.tasks import load_examples
from laddertune.vision.training import VLCollator, VLTrainConfig, evaluate_vl, train_vl


def test_vqa_soft_accuracy_by_hand():
    answers = ["yes"] * 2 + ["no"] * 8
    assert vqa_soft_accuracy("Yes.", answers) == pytest.approx(2 / 3)  # 2 annotators: 2/3
    assert vqa_soft_accuracy("no", answers) == 1.0  # 8 >= 3: full credit
    assert vqa_soft_accuracy("maybe", answers) == 0.0
    got = vl_metrics("vqa", ["yes", "no", "maybe"], [answers] * 3)
    assert got["score"] == pytest.approx(100 * (2 / 3 + 1 + 0) / 3)


def test_exact_match_by_hand():
    assert vl_metrics("exact_match", ["True", "false", "left"], ["true", "true", "left"])[
        "score"
    ] == pytest.approx(200 / 3)


def test_cider_by_hand():
    """CIDEr-D: a caption identical to its only reference scores 10 x (matched n-gram orders / 4) when every n-gram
    is unique in the corpus; a disjoint one 0. Three words have 1-, 2- and 3-grams but no 4-gram: 10 x 3/4."""
    refs = [["A red circle."], ["two green dots"]]
    assert vl_metrics("cider", ["a red circle", "two green dots"], refs)["cider"] == pytest.approx(750.0)
    assert vl_metrics("cider", ["a red circle", "blue square left"], refs)["cider"] == pytest.approx(375.0)


def test_layouts_vl_adapter_json_and_jsonl(tmp_path):
    vqa = tmp_path / "vqa.json"
    vqa.write_text(json.dumps([
        {"img_id": "COCO_1", "sent": "What colour?", "label": {"red": 1.0, "pink": 0.3},
         "answers": [{"answer": "red"}] * 3 + [{"answer": "pink"}]},
        {"img_id": "COCO_2", "sent": "Test question", "label": {}},  # test split: skipped
    ]))  # fmt: skip
    (e,) = load_examples("vqa", vqa)
    assert (e.source, e.target, e.image_ids, len(e.references)) == ("vqa: What colour?", "red", ["COCO_1"], 4)
    nlvr = tmp_path / "nlvr.json"
    nlvr.write_text(json.dumps([{"img0": "a-img0", "img1": "a-img1", "sent": "Both dogs.", "label": 0}]))
    (e,) = load_examples("nlvr", nlvr)
    assert (e.target, e.image_ids) == ("false", ["a-img0", "a-img1"])
    coco = tmp_path / "dataset_coco.json"
    coco.write_text(json.dumps({"images": [
        {"filename": "COCO_val2014_7.jpg", "split": "test", "sentences": [{"raw": "A dog."}, {"raw": "A pup."}]},
        {"filename": "COCO_train2014_8.jpg", "split": "restval", "sentences": [{"raw": "A cat."}]},
    ]}))  # fmt: skip
    (e,) = load_examples("caption", coco, split="test")
    assert (e.source, e.image_ids, e.references) == ("caption:", ["COCO_val2014_7"], ["A dog.", "A pup."])
    assert load_examples("caption", coco, split="train")[0].target == "A cat."
    plain = tmp_path / "gqa.jsonl"
    plain.write_text('{"images": ["g1"], "text": "Is it red?", "target": "yes"}\n')
    (e,) = load_examples("gqa", plain)
    assert (e.source, e.references) == ("gqa: Is it red?", "yes")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"images": ["x", "y"], "text": "t", "target": "yes"}\n')
    with pytest.raises(DataError, match="1 image"):
        load_examples("gqa", bad)


def test_joint_training_through_the_loop_learns_and_evaluates(tmp_path):
    examples, _ = build(tmp_path, 8, seed=3)
    tok = word_tokenizer(examples)
    g = torch.Generator().manual_seed(0)
    features = {f"img03{k:05d}": (torch.randn(4, 6, generator=g), grid_boxes(2, 2)) for k in range(8)}
    torch.manual_seed(0)
    cfg = T.T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    model = VisionLadderModel(T.T5ForConditionalGeneration(cfg), VisualConfig(6, 2))
    collator = VLCollator(tok, features)
    assert VLTrainConfig().learning_rate == 3e-3 and VLTrainConfig().max_grad_norm == 5.0
    losses = train_vl(model, examples, collator, VLTrainConfig(epochs=15, batch_size=8))
    assert sum(losses[-4:]) < 0.85 * sum(losses[:4])  # 60 steps of a tiny random model: it learns
    scores = evaluate_vl(model, examples, collator, tok, num_beams=2)
    assert set(scores) == {"vqa", "gqa", "nlvr", "caption"}
    assert all(0 <= scores[t]["score"] <= 100 for t in ("vqa", "gqa", "nlvr"))
    assert set(text_only_prior(examples, examples)) == set(scores)
    zeroed = VLCollator(tok, features, zero_features=True)(examples[:3])
    assert torch.all(zeroed["vis_feats"] == 0) and zeroed["vis_feats"].shape == (3, 1, 4, 6)
