"""The paper's Figure 8 ablations: side-tuning (one late shortcut, no ladders) and the pruned side network alone."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model
from laddertune.core.side_network import EMBED
from laddertune.core.taps import collect_taps
from laddertune.training.config import TrainConfig

FAMILIES = ["bert", "llama", "gpt2"]


def _train(model, batch, steps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        assert all(p.grad is None for p in model.backbone.parameters())
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", FAMILIES)
def test_side_tuning_reads_the_embedding_and_the_final_state_only(family):
    backbone = tiny_backbone(family, "sequence_classification")
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, method="side-tuning"))
    stack = model.side.stacks["body"]
    assert stack.tap_layers == [2] and len(stack.downs) == 0 and stack.gates.numel() == 0
    assert model.ladder_config.final_shortcut is True
    assert not any(p.requires_grad for p in model.backbone.parameters())
    batch = tiny_batch(family, "sequence_classification")
    losses = _train(model, batch)
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        taps = collect_taps(model, **batch, layers={"body": [0, 1, 2]})
        reference = model(**batch).logits
        torch.testing.assert_close(model(**batch, taps=taps).logits, reference)
        taps["body"][0] = torch.randn_like(taps["body"][0])  # middle layers: nothing reads them
        taps["body"][1] = torch.randn_like(taps["body"][1])
        torch.testing.assert_close(model(**batch, taps=taps).logits, reference)
        taps["body"][EMBED] = torch.randn_like(taps["body"][EMBED])  # the embedding output: the side's input
        assert not torch.allclose(model(**batch, taps=taps).logits, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_side_network_runs_no_backbone_layer(family):
    backbone = tiny_backbone(family, "sequence_classification")
    ran = []
    layer_names = ("layer.", "layers.", "h.")
    for name, module in backbone.named_modules():
        if any(f".{n}" in f".{name}" for n in layer_names) and name.split(".")[-1].isdigit():
            module.register_forward_hook(lambda *a, name=name: ran.append(name))
    batch = tiny_batch(family, "sequence_classification")
    with torch.no_grad():
        backbone(**{k: v for k, v in batch.items() if k != "labels"})
    assert len(ran) == 3  # the hooks see every layer that runs
    ran.clear()
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, method="pruned", init="magnitude"))
    assert ran == []  # the magnitude init reads weights, it runs nothing
    layer_params = [
        n for n, _ in model.backbone.named_parameters() if any(f".{m}" in f".{n}" for m in layer_names)
    ]
    assert layer_params == []  # only the embeddings and the heads are left
    down, up = model.side.stacks["body"].embed_down.weight, model.side.up.weight
    assert set(down.unique().tolist()) == {0.0, 1.0} and (down.sum(1) == 1).all()  # selects the kept dims
    assert (up.sum(0) == 1).all() and (up.sum(1) <= 1).all()  # and puts them back
    losses = _train(model, batch)
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        model(**batch)
    assert ran == []


@pytest.mark.parametrize("method", ["side-tuning", "pruned"])
def test_save_load_gives_identical_logits(method, tmp_path):
    backbone = tiny_backbone("bert", "sequence_classification")
    config = LadderConfig(reduction_factor=4, method=method, init="magnitude")
    model = get_ladder_model(backbone, config)
    batch = tiny_batch("bert", "sequence_classification")
    _train(model, batch, steps=2)
    model.eval()
    model.save_pretrained(tmp_path)
    fresh = tiny_backbone("bert", "sequence_classification")
    loaded = LadderModel.from_pretrained(fresh, tmp_path).eval()
    assert loaded.ladder_config.method == method
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    other = tiny_backbone("bert", "sequence_classification", seed=5)  # another backbone is still refused
    with pytest.raises(Exception, match="trained on backbone"):
        LadderModel.from_pretrained(other, tmp_path)


def test_refusals_are_one_line():
    with pytest.raises(ConfigError, match="init must be magnitude or fisher"):
        LadderConfig(method="pruned")
    with pytest.raises(ConfigError, match="final shortcut"):
        LadderConfig(method="side-tuning", final_shortcut=False)
    with pytest.raises(ConfigError, match="method must be one of"):
        LadderConfig(method="ladders")
    with pytest.raises(ConfigError, match="classification heads only"):
        get_ladder_model(
            tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4, method="side-tuning")
        )
    with pytest.raises(ConfigError, match="init must be magnitude or fisher"):
        TrainConfig.from_flat(task="sst2", method="pruned")
    with pytest.raises(ConfigError, match="reads no backbone taps to cache"):
        TrainConfig.from_flat(task="sst2", method="pruned", init="magnitude", tap_cache="x")
    assert TrainConfig.from_flat(task="sst2", method="side-tuning").resolved_lr() == 3e-3


@pytest.fixture(scope="module")
def run_assets(tmp_path_factory) -> dict:
    from test_trainer import save_backbone, write_data

    root = tmp_path_factory.mktemp("ablation-assets")
    return {"bert": save_backbone(root / "bert", "bert"), "data": write_data(root / "data")}


@pytest.mark.parametrize("method", ["side-tuning", "pruned"])
def test_train_evaluate_predict_through_the_loop(run_assets, tmp_path, method):
    from test_trainer import config

    from laddertune.training import evaluate, train
    from laddertune.training.prediction import predict_file

    init = "magnitude" if method == "pruned" else "random"
    out = tmp_path / "run"
    results = train(config(run_assets, out, method=method, init=init, epochs=1, memory_steps=1))
    assert results["effective"]["lr"] == 3e-3 and results["memory"]["peak_train_bytes"] > 0
    again = evaluate(out)
    assert again["validation"] == results["metrics"]["best_validation"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"sentence1": "a b c", "sentence2": "d e"}\n')
    (pred,) = predict_file(out / "checkpoint-best", rows)
    assert "label" in pred
