"""The CLIP-T5 memory prediction (paper Table 3): the traced models, the CPU check and the CLI path, on tiny T5s."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from test_memory import tiny_t5_config
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune.cli.main import main
from laddertune.errors import ConfigError
from laddertune.memory import PeakMemoryMeter
from laddertune.memory.predict import BREAKDOWN_KEYS, predict_memory
from laddertune.memory.training_model import make_optimizer, training_step
from laddertune.memory.vision_model import (
    PAPER_VL_BATCHES,
    VisualInput,
    build_vl_training_model,
    make_vl_batch,
)

VISUAL = VisualInput(images=2, regions=4, feature_dim=16)
BATCH, SOURCE, TARGET = 8, 12, 4


def lst_only(method: str) -> dict:
    """LST's r = 4 (an option of LST alone: the baselines have no reduction factor), without side checkpointing (with
    it and T5's one side head the prediction is known to fall short: tests/test_memory_precision.py)."""
    return {"reduction_factor": 4, "side_checkpointing": False} if method == "lst" else {}


def real_cpu_peak(method: str) -> int:
    """Two real training steps after a warm-up step, read by PeakMemoryMeter from the CPU allocator."""
    torch.manual_seed(0)
    config = tiny_t5_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_vl_training_model(config, method, VISUAL, **lst_only(method))
    optimizer = make_optimizer(model, "cpu")
    batch = make_vl_batch(config, VISUAL, BATCH, SOURCE, TARGET)
    training_step(model, batch, optimizer)
    meter = PeakMemoryMeter(model, optimizer, batch, device="cpu")
    with meter.phase("train"):
        for _ in range(2):
            training_step(model, batch, optimizer)
    return meter.report().peak("train")


@pytest.mark.parametrize("method", ["lst", "adapter"])
def test_vl_prediction_matches_a_real_cpu_run_within_2_percent(method):
    prediction = predict_memory(
        tiny_t5_config(), method, batch_size=BATCH, source_length=SOURCE, target_length=TARGET,
        device_semantics="cpu", visual=VISUAL, **lst_only(method),
    )  # fmt: skip
    real = real_cpu_peak(method)
    assert abs(prediction.peak_bytes - real) / real < 0.02, (prediction.peak_bytes, real)
    assert prediction.settings["images"] == 2 and prediction.settings["regions"] == 4


def test_vl_models_train_the_visual_embedding_and_lst_keeps_the_backbone_frozen():
    lst, _ = build_vl_training_model(tiny_t5_config(), "lst", VISUAL)
    assert all(not p.requires_grad for p in lst.backbone.parameters())
    assert all(p.requires_grad for p in lst.side.visual.parameters())
    lora, settings = build_vl_training_model(tiny_t5_config(), "lora", VISUAL)
    assert all(p.requires_grad for p in lora.visual.parameters())
    assert settings["lora_rank"] == 150  # the authors' VL LoRA (--lora_dim 150)


def test_cli_runs_every_task_batch_of_the_authors_setting(tmp_path, capsys):
    tiny_t5_config().save_pretrained(tmp_path)
    argv = ["memory", "--backbone", str(tmp_path), "--vl-task", "all", "--method", "lst", "--regions", "4",
            "--feature-dim", "8", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    tasks = out["tasks"]
    assert {t: p["batch_size"] for t, p in tasks.items()} == {
        "vqa": 300,
        "gqa": 500,
        "nlvr": 100,
        "caption": 250,
    }
    assert tasks["nlvr"]["settings"]["images"] == 2 and tasks["caption"]["target_length"] == 40
    assert out["peak_bytes"] == max(p["peak_bytes"] for p in tasks.values())
    assert out["peak_bytes"] == tasks[out["peak_task"]]["peak_bytes"]
    for p in tasks.values():
        assert set(p["breakdown"]) == set(BREAKDOWN_KEYS) and sum(p["breakdown"].values()) == p["peak_bytes"]
        assert p["settings"]["reduction_factor"] == 4 and p["settings"]["feature_dim"] == 8


def test_cli_one_task_human_table(tmp_path, capsys):
    tiny_t5_config().save_pretrained(tmp_path)
    argv = ["memory", "--backbone", str(tmp_path), "--vl-task", "nlvr", "--method", "bitfit", "--regions", "4",
            "--feature-dim", "8", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[nlvr: 2 examples x 20 text tokens + 2 image(s) x 4 regions -> 2]" in out
    assert "CLIP-T5 bitfit peak over the tasks' batches" in out and "(nlvr)" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["memory", "--backbone", "clip-t5-base", "--vl-task", "refcoco"],
        ["memory", "--backbone", "clip-t5-base", "--method", "qlora"],
        ["memory", "--backbone", "clip-t5-base", "--dtype", "nf4"],
        ["memory", "--backbone", "clip-t5-base", "--loss-chunk-size", "8"],
    ],
)
def test_cli_vl_user_errors_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_visual_input_validates():
    with pytest.raises(ConfigError, match="positive"):
        VisualInput(regions=0)
    assert PAPER_VL_BATCHES["gqa"].batch_size == 500  # int(300 * 100 / 60), multitask.py
