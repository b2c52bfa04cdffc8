"""``laddertune predict`` and what checkpoints carry for it (task.json, class names in ladder_config.json).

Tiny random backbones from test_trainer; each run folder is copied elsewhere before predicting, so every test also
checks that a run folder needs nothing of the place it was trained in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_trainer import config, one_thread, save_backbone, write_data  # noqa: F401 (one_thread: autouse)

from laddertune.cli import main
from laddertune.core import LadderModel
from laddertune.core.side_checkpoint import read_side_config
from laddertune.data import get_task
from laddertune.training import load_predictor, predict_file, train
from laddertune.training.build import load_task_backbone


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("predict")
    families = ("bert", "t5", "llama")
    return {**{f: save_backbone(root / f, f) for f in families}, "data": write_data(root / "data")}


def trained_copy(assets, tmp_path: Path, **kw) -> Path:
    """Train a 1-epoch run, copy the run folder elsewhere, remove the original; returns the copy.

    The copy sits at the same depth as the run did, so the backbone folder it records relative to itself
    (``../../bert``-style paths, see laddertune.io.paths) is still found: the project moved as a whole.
    tests/test_run_folder_paths.py moves backbone, data and run to another tree."""
    out = tmp_path / "run"
    train(config(assets, out, epochs=1, **kw))
    copy = tmp_path / "shared-run"
    shutil.copytree(out, copy)
    shutil.rmtree(out)
    return copy


def rows_file(path: Path, task: str = "rte", n: int = 5) -> Path:
    rows = [
        {"sentence1": "the cat sat", "sentence2": " ".join(["yes" if i % 2 else "no"] * 4)} for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_classification_predict_names_classes_and_matches_the_model(assets, tmp_path, capsys):
    run = trained_copy(assets, tmp_path)
    ckpt = run / "checkpoint-best"
    saved = read_side_config(ckpt)
    assert saved.label_names == ["entailment", "not_entailment"]
    assert saved.problem_type == "single_label_classification"
    task = json.loads((ckpt / "task.json").read_text())
    assert task["format"] == "classification" and task["spec"]["text_columns"] == ["sentence1", "sentence2"]
    inp = rows_file(tmp_path / "in.jsonl")
    rc = main(["predict", "--checkpoint", str(run), "--input", str(inp), "--batch-size", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == 5
    for a in answers:
        assert a["label"] in ("entailment", "not_entailment")
        assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert a["label"] == max(a["probabilities"], key=a["probabilities"].get)
    # the same numbers as the model rebuilt by hand, one row at a time (batching and sorting change nothing)
    predictor = load_predictor(ckpt)
    assert predictor.model.backbone.config.id2label == {0: "entailment", 1: "not_entailment"}
    tok = predictor.tokenizer
    for k, row in enumerate(json.loads(line) for line in inp.read_text().splitlines()):
        enc = tok(row["sentence1"], row["sentence2"], return_tensors="pt")
        with torch.no_grad():
            probs = predictor.model(**enc).logits.softmax(-1)[0]
        got = torch.tensor(list(answers[k]["probabilities"].values()))
        torch.testing.assert_close(got, probs, atol=1e-5, rtol=1e-4)


def test_from_pretrained_restores_id2label(assets, tmp_path):
    run = trained_copy(assets, tmp_path)
    spec = get_task("rte")
    backbone = load_task_backbone(assets["bert"], spec, "sequence_classification", None)
    backbone.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}  # what a plain load gives
    model = LadderModel.from_pretrained(backbone, run / "checkpoint-best")
    assert model.backbone.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert model.backbone.config.label2id == {"entailment": 0, "not_entailment": 1}


def test_regression_predict_gives_values(tmp_path):
    import transformers as T

    root = tmp_path / "assets"
    two = save_backbone(root / "bert")  # saved with a 2-class head; a regression backbone has a 1-output head
    one = T.BertForSequenceClassification.from_pretrained(two, num_labels=1, ignore_mismatched_sizes=True)
    one.save_pretrained(root / "bert1")
    T.AutoTokenizer.from_pretrained(two).save_pretrained(root / "bert1")
    a = {"bert": str(root / "bert1"), "data": write_data(root / "data", task="stsb", n_train=16, n_val=8)}
    run = trained_copy(a, tmp_path, task="stsb")
    inp = tmp_path / "in.csv"
    inp.write_text("sentence1,sentence2\nthe cat,yes yes\nthe dog,no no\n")
    out = tmp_path / "pred.jsonl"
    answers = predict_file(run, inp, out)
    assert [set(x) for x in answers] == [{"value"}, {"value"}]
    assert [json.loads(line) for line in out.read_text().splitlines()] == answers
    assert read_side_config(run / "checkpoint-best").problem_type == "regression"


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_generation_predict_gives_text(assets, tmp_path, family):
    fmt = {"t5": "text2text", "llama": "causal"}[family]
    run = trained_copy(assets, tmp_path, backbone=assets[family], format=fmt)
    answers = predict_file(run / "checkpoint-last", rows_file(tmp_path / "in.jsonl", n=3), batch_size=2)
    assert len(answers) == 3
    for a in answers:
        assert isinstance(a["text"], str)
        assert a["label"] is None or a["label"] in ("entailment", "not_entailment")


def test_baseline_checkpoint_predicts(assets, tmp_path):
    run = trained_copy(assets, tmp_path, method="bitfit")
    answers = predict_file(run, rows_file(tmp_path / "in.jsonl", n=2))
    assert [a["label"] in ("entailment", "not_entailment") for a in answers] == [True, True]


def test_predict_bad_inputs_are_one_line_errors(assets, tmp_path, capsys):
    run = trained_copy(assets, tmp_path)
    missing = tmp_path / "missing_col.jsonl"
    missing.write_text(json.dumps({"sentence1": "the cat"}) + "\n")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("{not json\n")
    out = tmp_path / "never.jsonl"
    cases = [
        (["--input", str(missing)], "missing column 'sentence2'"),
        (["--input", str(bad_json)], "malformed JSON"),
        (["--input", str(tmp_path / "absent.jsonl")], "no such file"),
        (["--input", str(tmp_path / "in.txt")], "unknown file type"),
    ]
    for extra, needle in cases:
        rc = main(["predict", "--checkpoint", str(run), "--output", str(out), *extra])
        _, err = capsys.readouterr()
        assert rc == 2 and needle in err and err.count("\n") == 1, err
        assert not out.exists()
    rc = main(["predict", "--checkpoint", str(tmp_path), "--input", str(missing)])
    _, err = capsys.readouterr()
    assert rc == 2 and "task.json" in err and err.count("\n") == 1


def test_corrupt_task_json_is_refused(assets, tmp_path):
    from laddertune.errors import CheckpointError

    run = trained_copy(assets, tmp_path)
    (run / "checkpoint-best" / "task.json").write_text('{"format": "classification"}')
    with pytest.raises(CheckpointError):
        load_predictor(run)


def test_several_checkpoints_share_one_backbone_pass(assets, tmp_path, capsys):
    a = trained_copy(assets, tmp_path / "a")
    b = trained_copy(assets, tmp_path / "b", seed=3, reduction_factor=4)
    inp = rows_file(tmp_path / "in.jsonl", n=4)
    rc = main(["predict", "--checkpoint", str(a), "--checkpoint", str(b), "--input", str(inp)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    together = [json.loads(line) for line in out.splitlines()]
    alone_a, alone_b = predict_file(a, inp), predict_file(b, inp)
    assert [set(row) for row in together] == [{"shared-run", "shared-run-1"}] * 4
    for row, x, y in zip(together, alone_a, alone_b, strict=True):
        for got, want in ((row["shared-run"], x), (row["shared-run-1"], y)):
            assert got["label"] == want["label"]
            for k in want["probabilities"]:
                assert got["probabilities"][k] == pytest.approx(want["probabilities"][k], abs=1e-6)
    # a side network trained on another backbone is refused
    other = {**assets, "bert": save_backbone(tmp_path / "other-bert", seed=5)}
    foreign = trained_copy(other, tmp_path / "c")
    rc = main(["predict", "--checkpoint", str(a), "--checkpoint", str(foreign), "--input", str(inp)])
    _, err = capsys.readouterr()
    assert rc == 2 and "fingerprint" in err and err.count("\n") == 1
