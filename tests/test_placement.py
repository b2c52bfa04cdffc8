"""``place_backbone``: the frozen backbone split over devices by accelerate, the side network on one device, the same
logits as on one device. On CPU the split is between the CPU and disk offload (accelerate loads each offloaded
block when it runs); a split over GPUs is checked as a placement plan."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_backbone, tiny_batch
from test_trainer import save_backbone, write_data

from laddertune import ConfigError, LadderConfig, get_ladder_model
from laddertune.core.placement import place_backbone, plan_placement
from laddertune.training import train
from laddertune.training.config import TrainConfig


def _model(family, head):
    model = get_ladder_model(tiny_backbone(family, head), LadderConfig(reduction_factor=4)).eval()
    torch.nn.init.normal_(model.side.up.weight, std=1.0)  # let the side network matter
    return model


def _bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_a_plan_over_two_gpus_splits_between_layers_and_never_inside_one():
    backbone = tiny_backbone("llama", "causal_lm")
    half = _bytes(backbone) // 2
    device_map = plan_placement(backbone, max_memory={0: half, 1: half * 4, "cpu": 0})
    assert {0, 1} <= set(device_map.values())
    layer_names = [f"model.layers.{i}" for i in range(3)]
    for name in device_map:  # whole decoder layers (LlamaDecoderLayer is in _no_split_modules)
        assert not any(name.startswith(layer + ".") for layer in layer_names), name


@pytest.mark.parametrize(
    ("family", "head", "share"),
    [("llama", "causal_lm", 0.5), ("bert", "sequence_classification", 0.9)],  # BERT's embeddings are large
)
def test_a_backbone_split_between_cpu_and_disk_gives_the_same_logits(tmp_path, family, head, share):
    model = _model(family, head)
    reference = copy.deepcopy(model)
    batch = tiny_batch(family, head)
    budget = int(_bytes(model.backbone) * share)  # part of the backbone fits: the rest is offloaded to disk
    device_map = place_backbone(model, max_memory={"cpu": budget}, offload_dir=str(tmp_path))
    assert {"cpu", "disk"} <= set(device_map.values())
    assert model.device == torch.device("cpu")
    with torch.no_grad():
        out, ref = model(**batch), reference(**batch)
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    assert torch.allclose(out.loss, ref.loss, atol=1e-5)
    if head == "causal_lm":
        ids, mask = batch["input_ids"][:1], batch["attention_mask"][:1]
        assert torch.equal(
            model.generate(ids, mask, max_new_tokens=4), reference.generate(ids, mask, max_new_tokens=4)
        )


def test_train_with_device_map_auto_equals_one_device(tmp_path):
    """``--device-map auto`` on a CPU-only machine: accelerate places everything on the CPU; same run, same losses."""
    bert, data = save_backbone(tmp_path / "bert"), write_data(tmp_path / "data", n_train=12, n_val=6)
    kw = dict(task="rte", epochs=1, batch_size=4, memory_steps=0, log_every=1, backbone=bert, data_dir=data)
    losses = []
    for name, device_map in (("plain", None), ("auto", "auto")):
        torch.manual_seed(0)
        train(TrainConfig.from_flat(**kw, device_map=device_map, output_dir=str(tmp_path / name)))
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in records if r["type"] == "train"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and len(losses[0]) == 3
    assert json.loads((tmp_path / "auto" / "train_config.json").read_text())["device_map"] == "auto"
    with pytest.raises(ConfigError, match="device_map must be one of auto"):
        TrainConfig.from_flat(**kw, device_map="balanced")
    with pytest.raises(ConfigError, match="device_map places a frozen backbone next to a side network"):
        TrainConfig.from_flat(**kw, device_map="auto", method="lora")
