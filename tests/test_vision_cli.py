"""Vision and language from the command line: ``laddertune train --task vqa|...|vl-multitask``, ``evaluate`` and
``predict --features``, end to end, in-process through ``laddertune.cli.main``.

The images are :mod:`laddertune.vision.synthetic`'s PIL shapes; their features (the mean colour of each cell of a
2x2 grid: 4 regions of 3 values) are written to HDF5 in the VL-T5 layout that ``FeatureStore`` reads; the annotations
in VL-Adapter's JSON layout (VQA, NLVR2) and plain JSONL; the backbone is ``tiny_backbone("t5", "seq2seq_lm")`` with
a word-level tokenizer over the synthetic words, saved to a folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB, tiny_backbone
from fault_injection import Fault, inject
from PIL import Image
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)
from transformers import AutoTokenizer, T5ForConditionalGeneration

from laddertune.cli import main
from laddertune.errors import ConfigError
from laddertune.training.config import TrainConfig
from laddertune.vision import VisionLadderModel
from laddertune.vision.features import FeatureStore
from laddertune.vision.metrics import vl_metrics
from laddertune.vision.synthetic import build, word_tokenizer
from laddertune.vision.tasks import get_vl_task, load_examples, per_task
from laddertune.vision.training import VLCollator, generate_vl

h5py = pytest.importorskip("h5py")


def _text(e) -> str:
    return e.source.removeprefix(get_vl_task(e.task).prompt).strip()


def write_features(path: Path, *image_dirs: Path) -> None:
    """Each image's 2x2 grid of mean colours, (4, 3) float32, one group per image id (no boxes: a grid's)."""
    with h5py.File(path, "w") as f:
        for folder in image_dirs:
            for png in sorted(folder.glob("*.png")):
                pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255  # (64, 64, 3)
                cells = pixels.reshape(2, 32, 2, 32, 3).mean(axis=(1, 3)).reshape(4, 3)
                f.create_group(png.stem)["features"] = cells


def write_vqa(path: Path, examples) -> None:
    """VL-Adapter's VQA annotation JSON."""
    records = [
        {"img_id": e.image_ids[0], "sent": _text(e), "label": {e.target: 1.0}, "answers": e.references}
        for e in examples
        if e.task == "vqa"
    ]
    path.write_text(json.dumps(records))


def write_nlvr(path: Path, examples) -> None:
    """Plain JSONL: images, text, target."""
    rows = [
        {"images": e.image_ids, "text": _text(e), "target": e.target} for e in examples if e.task == "nlvr"
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def vl(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vl")
    train, _ = build(root / "train", 24, seed=0)
    val, _ = build(root / "val", 8, seed=1)
    new, _ = build(root / "new", 4, seed=2)
    write_features(root / "features.h5", root / "train", root / "val")
    write_features(root / "new.h5", root / "new")
    for name, examples in (("train", train), ("val", val)):
        write_vqa(root / f"vqa_{name}.json", examples)
        write_nlvr(root / f"nlvr_{name}.jsonl", examples)
    tok = word_tokenizer(train + val + new)
    assert len(tok) <= VOCAB
    backbone = root / "t5"
    tiny_backbone("t5", "seq2seq_lm").save_pretrained(backbone)
    tok.save_pretrained(backbone)
    rows = [{"question": _text(e), "image_id": e.image_ids[0]} for e in new if e.task == "vqa"]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mixed = [{**rows[0], "task": "vqa"}] + [
        {"task": "nlvr2", "sentence": _text(e), "img0": e.image_ids[0], "img1": e.image_ids[1]}
        for e in new
        if e.task == "nlvr"
    ]
    (root / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    return {"root": root, "train": train, "val": val, "new": new, "backbone": backbone}


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def vqa_argv(vl, out: Path, *extra) -> list:
    """A VQA run of 30 steps; lr 3e-2 (not the paper's 3e-3) so that the tiny random T5 learns something by then,
    with the authors' side (full-width taps, the backbone's heads): the defaults' narrower side learns nothing here
    in 30 steps."""
    root = vl["root"]
    lst = "--method" not in extra or extra[list(extra).index("--method") + 1] == "lst"
    authors = ["--tap-projection", "none", "--side-attention-heads", "0"] if lst else []
    return [
        "train", "--task", "vqa", "--backbone", vl["backbone"], "--features", root / "features.h5",
        "--annotations", root / "vqa_train.json", "--validation-annotations", root / "vqa_val.json",
        "--batch-size", "8", "--epochs", "10", "--lr", "3e-2", "--memory-steps", "0", "--no-progress",
        "--output-dir", out, *authors, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def vqa_run(vl, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vqa"
    assert main([str(a) for a in vqa_argv(vl, out)]) == 0
    return out


# ------------------------------------------------------------------------------------------------- the config


def test_a_vl_run_gets_the_papers_settings_unless_given():
    c = TrainConfig.from_flat(task="nlvr2", features="f.h5", annotations="a.json")
    o, g = c.optimization, c.generation
    assert (c.method.reduction_factor, c.method.side_layers, o.lr, o.weight_decay) == (4, None, 3e-3, 0.03)
    assert (o.warmup_ratio, o.max_grad_norm, g.num_beams, c.data.max_length) == (0.1, 5.0, 5, 20)
    assert c.data.annotations == {"nlvr": "a.json"}  # nlvr2 is the spec's nlvr
    assert c.data.task_batch_sizes == {"vqa": 300, "gqa": 500, "nlvr": 100, "caption": 250}
    given = TrainConfig.from_flat(
        task="vqa", features="f.h5", annotations="a.json", batch_size=8, weight_decay=0.0, warmup_steps=3,
        method="lora",
    )  # fmt: skip
    assert given.data.task_batch_sizes is None and given.optimization.weight_decay == 0.0
    assert (given.optimization.warmup_ratio, given.optimization.warmup_steps) == (None, 3)
    assert (given.method.lora_rank, given.optimization.lr) == (150, 3e-3)  # the paper's Table 3 LoRA
    assert (
        TrainConfig.from_flat(task="caption", method="full", features="f", annotations="c").optimization.lr
        == 1e-4
    )
    # a text task is untouched
    assert TrainConfig.from_flat(task="rte").optimization.weight_decay == 0.0
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    ("value", "task", "expected"),
    [
        ("a.json", "vqa", {"vqa": "a.json"}),
        ("vqa=a.json,NLVR2=b.jsonl", "vl-multitask", {"vqa": "a.json", "nlvr": "b.jsonl"}),
        ("dir/x=1.json", "gqa", {"gqa": "dir/x=1.json"}),  # not a task's name: a file
        (
            {"caption": Path("c.json"), "vqa": "v.json"},
            "vl-multitask",
            {"vqa": "v.json", "caption": "c.json"},
        ),
    ],
)
def test_per_task_values(value, task, expected):
    assert per_task(value, "annotations", task) == expected


@pytest.mark.parametrize(
    ("value", "task", "kind", "message"),
    [
        ("a.json", "vl-multitask", str, "names each task's value"),
        ("gqa=a.json", "vqa", str, "this run trains vqa"),
        ({"coco": "a"}, "vl-multitask", str, "unknown task 'coco'"),
        ("vqa=0", "vqa", int, "positive integer"),
        ({"vqa": 3}, "vqa", str, "a file name"),
        (7, "vl-multitask", int, "TASK=VALUE"),
    ],
)
def test_per_task_values_refused_in_one_line(value, task, kind, message):
    with pytest.raises(ConfigError, match=message):
        per_task(value, "annotations", task, kind=kind)


# ------------------------------------------------------------------------------------------------- end to end


def test_train_vqa_end_to_end(vl, vqa_run):
    results = json.loads((vqa_run / "results.json").read_text())
    best = results["metrics"]["best_validation"]
    assert set(best) == {"vqa_accuracy", "score"} and best["score"] == best["vqa_accuracy"]
    assert 0 < best["score"] <= 100  # it learned something (the answers below are compared, not only scored)
    n_train = sum(e.task == "vqa" for e in vl["train"])  # 24: one question per image
    assert results["data"]["sizes"] == {"train": n_train, "validation": 8, "test": None}
    effective = results["effective"]
    assert (effective["format"], effective["head"], effective["lr"]) == ("vision", "seq2seq_lm", 3e-2)
    assert effective["steps_per_epoch"] == math.ceil(n_train / 8) and effective["total_steps"] == 10 * 3
    assert effective["warmup_steps"] == 3  # 10% of 30 steps
    config = json.loads((vqa_run / "train_config.json").read_text())
    assert (config["weight_decay"], config["max_grad_norm"], config["num_beams"]) == (0.03, 5.0, 5)
    assert (config["reduction_factor"], config["side_layers"], config["max_length"]) == (4, None, 20)
    recorded = config["annotations"]["vqa"]  # relative to the run folder, as every recorded path
    assert recorded.startswith("../") and recorded.endswith("vqa_train.json")
    best_dir = vqa_run / "checkpoint-best"
    names = {p.name for p in best_dir.iterdir()}
    assert {"vision_config.json", "ladder_config.json", "ladder_model.safetensors", "task.json"} <= names
    assert json.loads((best_dir / "vision_config.json").read_text()) == {"feature_dim": 3, "max_images": 2}
    task = json.loads((best_dir / "task.json").read_text())
    assert task["vision"]["tasks"] == ["vqa"] and task["format"] == "vision"
    assert (
        len([line for line in (vqa_run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]) == 10
    )


def test_evaluate_the_run_folder_gives_its_best_validation(vl, vqa_run, capsys):
    rc, out, err = run(["evaluate", "--checkpoint", vqa_run, "--json", "--no-progress"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    best = json.loads((vqa_run / "results.json").read_text())["metrics"]["best_validation"]
    assert result["validation"] == pytest.approx(best) and result["test"] is None
    assert result["task"] == "vqa"


def test_predict_new_images_and_the_validation_rows(vl, vqa_run, tmp_path, capsys):
    root = vl["root"]
    out = tmp_path / "answers.jsonl"
    argv = ["predict", "--checkpoint", vqa_run, "--input", root / "rows.jsonl", "--features", root / "new.h5"]
    rc, _, err = run([*argv, "--output", out, "--no-progress"], capsys)
    assert rc == 0, err
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(answers) == 4 and all(a["task"] == "vqa" and isinstance(a["answer"], str) for a in answers)
    # VL-Adapter's annotation records are rows too: the validation set's answers score the run's best validation
    records = _as_jsonl(root / "vqa_val.json", tmp_path)
    argv = ["predict", "--checkpoint", vqa_run, "--input", records, "--features", root / "features.h5"]
    rc, stdout, err = run([*argv, "--no-progress"], capsys)
    assert rc == 0, err
    predicted = [json.loads(line)["answer"] for line in stdout.splitlines()]
    references = [r["answers"] for r in json.loads((root / "vqa_val.json").read_text())]
    best = json.loads((vqa_run / "results.json").read_text())["metrics"]["best_validation"]
    assert vl_metrics("vqa", predicted, references)["score"] == pytest.approx(best["score"])
    # the same answers as the library's own path: from_pretrained on the checkpoint, generate_vl, beam 5
    tok = AutoTokenizer.from_pretrained(vl["backbone"])
    model = VisionLadderModel.from_pretrained(
        T5ForConditionalGeneration.from_pretrained(vl["backbone"]), vqa_run / "checkpoint-best"
    )
    with FeatureStore(root / "features.h5") as store:
        examples = load_examples("vqa", root / "vqa_val.json")
        assert generate_vl(model, examples, VLCollator(tok, store), tok, num_beams=5) == predicted


def _as_jsonl(path: Path, folder: Path) -> Path:
    out = folder / (path.stem + ".jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in json.loads(path.read_text())))
    return out


def test_an_interrupted_run_resumes_to_the_same_result(vl, vqa_run, tmp_path, capsys):
    """Stopped in the second epoch's validation, resumed from checkpoint-last: the same scores and losses as the
    run that was never stopped (the per-task batch order comes from the seed and the epoch alone)."""
    out = tmp_path / "resumed"
    with inject(Fault("laddertune.training.loop:Run.validate", at=2, error="KeyboardInterrupt")):
        rc, _, _ = run(vqa_argv(vl, out), capsys)
    assert rc == 130 and not (out / "results.json").exists()
    rc, _, err = run([*vqa_argv(vl, out), "--resume"], capsys)
    assert rc == 0, err

    def losses(folder):
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [
            (r["type"], r["step"], r.get("loss"), r.get("metrics")) for r in records if r["type"] != "start"
        ]

    resumed = [r for r in losses(out) if r[0] != "resume"]
    assert resumed == losses(vqa_run)


def test_vl_multitask_over_two_tasks(vl, tmp_path, capsys):
    root, out = vl["root"], tmp_path / "multi"
    argv = [
        "train", "--task", "vl-multitask", "--backbone", vl["backbone"], "--features", root / "features.h5",
        "--annotations", f"vqa={root / 'vqa_train.json'},nlvr2={root / 'nlvr_train.jsonl'}",
        "--validation-annotations", f"vqa={root / 'vqa_val.json'},nlvr2={root / 'nlvr_val.jsonl'}",
        "--task-batch-sizes", "vqa=8,nlvr2=5", "--epochs", "1", "--memory-steps", "0", "--no-progress",
        "--output-dir", out,
    ]  # fmt: skip
    rc, stdout, err = run(argv, capsys)
    assert rc == 0, err
    assert stdout.startswith(
        "train lst on vl-multitask: format vision, head seq2seq_lm; 36 train / 12 validation examples; 1 epoch of "
        "6 steps, 6 steps of one task's batch (vqa 8, nlvr 5)\n"
    )
    results = json.loads((out / "results.json").read_text())
    best = results["metrics"]["best_validation"]
    assert set(best) == {"score", "vqa", "nlvr"} and best["score"] == pytest.approx(
        (best["vqa"] + best["nlvr"]) / 2
    )
    assert results["effective"]["steps_per_epoch"] == math.ceil(24 / 8) + math.ceil(12 / 5)
    assert results["data"]["task_sizes"] == {
        "vqa": {"train": 24, "validation": 8},
        "nlvr": {"train": 12, "validation": 4},
    }
    assert results["data"]["batch_sizes"] == {"vqa": 8, "nlvr": 5}
    answers = tmp_path / "mixed_answers.jsonl"
    rc, _, err = run(
        ["predict", "--checkpoint", out, "--input", root / "mixed.jsonl", "--features", root / "new.h5",
         "--output", answers, "--num-beams", "2", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    got = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [a["task"] for a in got] == ["vqa", "nlvr", "nlvr"]
    # a row without its task, on a multi-task checkpoint: one line naming the row, nothing written
    (tmp_path / "untasked.jsonl").write_text(
        json.dumps({"question": "what color is it ?", "image_id": "img0200000"})
    )
    rc, _, err = run(
        ["predict", "--checkpoint", out, "--input", tmp_path / "untasked.jsonl", "--features", root / "new.h5",
         "--output", tmp_path / "none.jsonl"],
        capsys,
    )  # fmt: skip
    assert rc == 2 and err.count("\n") == 1 and "untasked.jsonl:1: no task" in err
    assert not (tmp_path / "none.jsonl").exists()


def test_captions_from_karpathys_file_scored_by_cider(vl, tmp_path, capsys):
    """One dataset_coco.json for both: its train images train, its val images validate (CIDEr)."""
    out = tmp_path / "caption"
    images = [
        {"filename": f"{e.image_ids[0]}.png", "split": split, "sentences": [{"raw": c} for c in e.references]}
        for split, examples in (("train", vl["train"]), ("val", vl["val"]))
        for e in examples
        if e.task == "caption"
    ]
    coco = tmp_path / "dataset_coco.json"
    coco.write_text(json.dumps({"images": images}))
    argv = _replace(vqa_argv(vl, out, "--epochs", "1"), "--task", "caption")
    argv = _replace(_replace(argv, "--annotations", coco), "--validation-annotations", coco)
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]["best_validation"]) == {"cider", "score"}
    assert results["data"]["sizes"] == {"train": 24, "validation": 8, "test": None}


def test_each_tasks_batches_hold_one_task_and_cover_the_epoch(vl, tmp_path):
    from laddertune.training.run_data import load_run_data

    root = vl["root"]
    config = TrainConfig.from_flat(
        task="vl-multitask", backbone=str(vl["backbone"]), features=str(root / "features.h5"),
        annotations={"vqa": str(root / "vqa_train.json"), "nlvr2": str(root / "nlvr_train.jsonl")},
        task_batch_sizes="vqa=7,nlvr=4",
    )  # fmt: skip
    data = load_run_data(config)
    assert len(data.splits.validation) == 2 + 1  # 10% (rounded) of 24 VQA and of 12 NLVR2 examples held out
    train = data.splits.train
    batches = data.epoch_batches(32, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(train)))
    sizes = {"vqa": 7, "nlvr": 4}
    for batch in batches:
        (task,) = {train[i].task for i in batch}
        assert len(batch) <= sizes[task]
    assert len(batches) == data.batch_count(32) == math.ceil(22 / 7) + math.ceil(11 / 4)
    assert batches == data.epoch_batches(32, seed=0, epoch=0) != data.epoch_batches(32, seed=0, epoch=1)
    collated = data.collate([train[i] for i in next(b for b in batches if train[b[0]].task == "nlvr")])
    assert collated["vis_feats"].shape[1:] == (2, 4, 3)  # NLVR2: two images of 4 regions of 3 features


@pytest.mark.parametrize(
    "method",
    [("lora", "--lora-rank", "4"), ("adapter",), ("bitfit",), ("prompt",), ("full",)],
    ids=lambda m: m[0],
)
def test_a_baseline_trains_predicts_and_evaluates(vl, tmp_path, capsys, method):
    """The baselines feed the image to the T5 encoder (VisualBackboneModel): train, evaluate and predict."""
    out = tmp_path / method[0]
    rc, _, err = run(vqa_argv(vl, out, "--method", *method, "--epochs", "1"), capsys)
    assert rc == 0, err
    names = {p.name for p in (out / "checkpoint-best").iterdir()}
    assert {"vision_config.json", "trainable.safetensors", "task.json"} <= names
    rc, stdout, err = run(["evaluate", "--checkpoint", out, "--json", "--no-progress"], capsys)
    assert rc == 0, err
    best = json.loads((out / "results.json").read_text())["metrics"]["best_validation"]
    assert json.loads(stdout)["validation"] == pytest.approx(best)
    root = vl["root"]
    rc, stdout, err = run(
        ["predict", "--checkpoint", out, "--input", root / "rows.jsonl", "--features", root / "new.h5"],
        capsys,
    )
    assert rc == 0, err
    assert [json.loads(line)["task"] for line in stdout.splitlines()] == ["vqa"] * 4


# ------------------------------------------------------------------------------------------------- errors


def _missing_image_annotations(vl) -> Path:
    path = vl["root"] / "vqa_missing.json"
    records = json.loads((vl["root"] / "vqa_train.json").read_text())
    records[5]["img_id"] = "img_nowhere"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda argv, vl: _replace(argv, "--features", vl["root"] / "nope.h5"), "cannot open feature file"),
        (lambda argv, vl: _replace(argv, "--annotations", _missing_image_annotations(vl)), "'img_nowhere'"),
        (lambda argv, vl: _drop(argv, "--features"), "give their HDF5 file (--features)"),
        (lambda argv, vl: [*_replace(argv, "--task", "rte")], "not of task rte"),
        (lambda argv, vl: _replace(argv, "--backbone", "minilm"), "not one: pass --backbone t5-base"),
        (lambda argv, vl: [*argv, "--method", "side-tuning"], "not available for vision-and-language"),
        (lambda argv, vl: [*argv, "--train-file", "x.csv"], "train_file is an option of text tasks"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(vl, tmp_path, capsys, change, message):
    out = tmp_path / "run"
    rc, stdout, err = run(change(vqa_argv(vl, out), vl), capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_predict_errors_are_one_line(vl, vqa_run, tmp_path, capsys):
    root = vl["root"]
    base = ["predict", "--checkpoint", vqa_run, "--input", root / "rows.jsonl"]
    rc, _, err = run(base, capsys)
    assert rc == 2 and err.count("\n") == 1 and "(--features)" in err
    rc, _, err = run([*base, "--features", root / "features.h5"], capsys)  # the new images are not in it
    assert (
        rc == 2
        and err.count("\n") == 1
        and "rows.jsonl:1: image 'img0200000' is not in the feature file" in err
    )


def _replace(argv: list, flag: str, value) -> list:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def _drop(argv: list, flag: str) -> list:
    i = argv.index(flag)
    return [*argv[:i], *argv[i + 2 :]]
