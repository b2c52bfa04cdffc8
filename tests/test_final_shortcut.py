"""The final shortcut: the head reads the backbone's final hidden state plus the up-projected side output."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model
from laddertune.core.taps import collect_taps


def test_step0_logits_are_the_backbones_own_head_on_its_final_state():
    backbone = tiny_backbone("bert", "sequence_classification").eval()
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_shortcut=True)).eval()
    batch = tiny_batch("bert", "sequence_classification")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, backbone(**inputs).logits, rtol=0, atol=0)
    assert not model.side.up.weight.any()


def test_without_the_shortcut_the_head_reads_the_side_output_alone():
    backbone = tiny_backbone("bert", "sequence_classification").eval()
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_shortcut=False)).eval()
    batch = tiny_batch("bert", "sequence_classification")
    side = model.side
    with torch.no_grad():
        out = model(**batch).logits
        hidden = side.stacks["body"]({**collect_taps(model, **batch)["body"]}, batch["attention_mask"])
        expected = side.head(side.up(hidden.last_hidden_state[:, 0]))
    torch.testing.assert_close(out, expected)
    assert side.up.weight.std() > 0.005  # the authors' N(0, 0.01^2)


@pytest.mark.parametrize("side_layers", [None, [0, 1]], ids=["all-layers", "last-layer-dropped"])
def test_given_taps_give_the_same_logits_and_include_the_last_layer(side_layers):
    backbone = tiny_backbone("bert", "sequence_classification")
    model = get_ladder_model(
        backbone, LadderConfig(reduction_factor=4, side_layers=side_layers, final_shortcut=True)
    )
    with torch.no_grad():
        model.side.up.weight.normal_(std=0.1)  # as after some training
    model.eval()
    batch = tiny_batch("bert", "sequence_classification")
    assert model.side.stacks["body"].tap_layers[-1] == 2
    with torch.no_grad():
        taps = collect_taps(model, **batch)
        torch.testing.assert_close(model(**batch, taps=taps).logits, model(**batch).logits)
        del taps["body"][2]
        if side_layers:
            with pytest.raises(ValueError, match="last layer"):
                model(**batch, taps=taps)


def test_side_trains_after_the_first_step_and_backbone_stays_frozen():
    backbone = tiny_backbone("bert", "sequence_classification")
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_shortcut=True))
    opt = torch.optim.AdamW(model.side.parameters(), lr=1e-2)
    batch = tiny_batch("bert", "sequence_classification")
    losses = []
    for step in range(3):
        loss = model(**batch).loss
        loss.backward()
        if step == 1:  # step 0: only Up and the head (Up is zero); from step 1 on every part learns
            missing = [n for n, p in model.side.named_parameters() if p.grad is None or not p.grad.any()]
            assert missing == [], f"side parameters without gradient: {missing}"
        assert all(p.grad is None for p in model.backbone.parameters())
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_default_and_refusals():
    bert = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    assert bert.ladder_config.final_shortcut is True  # the default for classification heads
    t5 = get_ladder_model(tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4))
    assert t5.ladder_config.final_shortcut is False  # LM heads keep the authors' head
    with pytest.raises(ConfigError, match="classification heads only"):
        get_ladder_model(
            tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4, final_shortcut=True)
        )
    with pytest.raises(ConfigError, match="final_shortcut"):
        LadderConfig(final_shortcut="yes")


def test_checkpoints_round_trip_and_old_ones_load_without_the_shortcut(tmp_path):
    backbone = tiny_backbone("bert", "sequence_classification")
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_shortcut=True))
    with torch.no_grad():
        model.side.up.weight.normal_(std=0.1)
    model.eval()
    batch = tiny_batch("bert", "sequence_classification")
    model.save_pretrained(tmp_path / "new")
    loaded = LadderModel.from_pretrained(backbone, tmp_path / "new").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    # a ladder_config.json from before the field existed: the authors' head, the setting it trained with
    saved = json.loads((tmp_path / "new" / "ladder_config.json").read_text())
    del saved["final_shortcut"]
    (tmp_path / "new" / "ladder_config.json").write_text(json.dumps(saved))
    assert LadderModel.from_pretrained(backbone, tmp_path / "new").ladder_config.final_shortcut is False
