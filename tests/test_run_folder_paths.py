"""A run folder records no absolute path: moved with its backbone and data, it evaluates, predicts and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_trainer import config, one_thread, save_backbone, write_data  # noqa: F401 (one_thread: autouse)

from laddertune.training import evaluate, predict_file, train
from laddertune.training.config import TrainConfig


def text_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]


def test_moved_project_evaluates_predicts_and_resumes(tmp_path, monkeypatch):
    old = tmp_path / "old"
    assets = {"bert": save_backbone(old / "bert"), "data": write_data(old / "data", n_train=16, n_val=8)}
    kw = {"epochs": 1, "tap_cache": str(old / "cache")}
    first = train(config(assets, old / "runs" / "a", **kw))
    recorded = json.loads((old / "runs" / "a" / "train_config.json").read_text())
    want = {"backbone": "../../bert", "data_dir": "../../data", "output_dir": ".", "tap_cache": "../../cache"}
    assert {k: recorded[k] for k in want} == want

    new = tmp_path / "elsewhere" / "new"
    shutil.copytree(old, new)
    shutil.rmtree(old)  # nothing of the old place is left to read
    run = new / "runs" / "a"
    for path in text_files(run):
        assert str(tmp_path) not in path.read_text(), path

    loaded = TrainConfig.load(run)
    assert loaded.model.backbone == str(new / "bert") and loaded.data.data_dir == str(new / "data")
    scores = evaluate(run)["validation"]
    assert scores == first["metrics"]["validation"][-1]["metrics"]
    rows = new / "in.jsonl"
    rows.write_text(json.dumps({"sentence1": "the cat", "sentence2": "yes yes yes yes"}) + "\n")
    assert predict_file(run, rows)[0]["label"] in ("entailment", "not_entailment")

    # resuming from the new place with its paths, spelled absolute or relative, is the same run (no difference)
    again = config({"bert": str(new / "bert"), "data": str(new / "data")}, run, epochs=1)
    assert again.differences(loaded) == []
    monkeypatch.chdir(new)
    again.model.backbone = "bert"
    assert again.differences(loaded) == []
    again.model.backbone = str(new / "data")
    assert again.differences(loaded) == ["backbone"]


def test_a_run_copied_without_its_backbone_folder_asks_for_it(tmp_path, capsys):
    from laddertune.cli import main

    assets = {
        "bert": save_backbone(tmp_path / "models" / "bert"),
        "data": write_data(tmp_path / "data", n_train=16, n_val=8),
    }
    train(config(assets, tmp_path / "runs" / "a", epochs=1))
    run = tmp_path / "deeper" / "copies" / "a"  # the recorded ../../models/bert is not beside the copy
    shutil.copytree(tmp_path / "runs" / "a", run)
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"sentence1": "the cat", "sentence2": "no no no no"}) + "\n")
    capsys.readouterr()
    for argv in (
        ["evaluate", "--checkpoint", str(run), "--data-dir", assets["data"]],
        ["predict", "--checkpoint", str(run), "--input", str(rows)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "pass --backbone" in err[0], err
        assert main([*argv, "--backbone", assets["bert"]]) == 0
        capsys.readouterr()
