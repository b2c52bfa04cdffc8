"""The final shortcut: the head reads the backbone's final hidden state plus the up-projected side output."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_backbone, tiny_batch
from test_families import CASES, LM, S2S, batch, tiny

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model
from laddertune.core.tap_projection import FINAL
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


@pytest.mark.parametrize("projection", ["random", "none"])
@pytest.mark.parametrize("side_layers", [None, [0, 1]], ids=["all-layers", "last-layer-dropped"])
def test_given_taps_give_the_same_logits_and_include_the_last_layer(side_layers, projection):
    """The taps hold the final shortcut's input: the last layer's output at full width (its own tap ``FINAL``
    when the other taps are projected)."""
    backbone = tiny_backbone("bert", "sequence_classification")
    config = LadderConfig(
        reduction_factor=4, side_layers=side_layers, final_shortcut=True, tap_projection=projection
    )
    model = get_ladder_model(backbone, config)
    with torch.no_grad():
        model.side.up.weight.normal_(std=0.1)  # as after some training
    model.eval()
    batch = tiny_batch("bert", "sequence_classification")
    final = FINAL if projection != "none" else 2
    assert final in model.side.stacks["body"].tap_layers
    with torch.no_grad():
        taps = collect_taps(model, **batch)
        assert taps["body"][final].shape[-1] == 32  # full width
        torch.testing.assert_close(model(**batch, taps=taps).logits, model(**batch).logits)
        del taps["body"][final]
        if side_layers or projection != "none":
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
    assert t5.ladder_config.final_shortcut is True  # and for LM heads: the model starts as the pretrained LM
    authors = get_ladder_model(
        tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4, final_shortcut=False)
    )
    assert authors.ladder_config.final_shortcut is False and authors.side.up.weight.any()
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


# -- LM heads: the LadderModel starts as the pretrained LM ------------------------------------------------------------
LM_CASES = [c for c in CASES if c.values[1] in (LM, S2S)]


@pytest.mark.parametrize(("name", "head"), LM_CASES)
def test_lm_step0_logits_equal_the_backbones_bit_for_bit(name, head):
    """With the final shortcut (the LM default) the up-projection starts at zero, so the side network adds nothing
    and the logits are the backbone's own (its final logits bias, soft cap or scale applied as its forward does)."""
    backbone = tiny(name, head)
    data = batch(head)
    with torch.no_grad():
        expected = backbone(**data)
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4)).eval()
    assert model.ladder_config.final_shortcut is True
    with torch.no_grad():
        out = model(**data)
    torch.testing.assert_close(out.logits, expected.logits.float(), rtol=0, atol=0)
    torch.testing.assert_close(out.loss, expected.loss.float(), rtol=0, atol=0)


@pytest.mark.parametrize(("family", "head"), [("llama", "causal_lm"), ("t5", "seq2seq_lm")])
def test_lm_shortcut_on_taps_chunked_and_in_generation(family, head):
    """The same model on a tap cache's taps and with the chunked loss gives the same loss and gradients; at step 0
    greedy generation is the backbone's own."""
    backbone = tiny_backbone(family, head).eval()
    data = tiny_batch(family, head)
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4)).eval()
    with torch.no_grad():
        model.side.up.weight.normal_(std=0.05)  # a trained up-projection: the side's output counts too
    plain = model(**data)
    plain.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.side.named_parameters() if p.grad is not None}
    model.zero_grad()
    taps = model.backbone_taps(**data)
    on_taps = model.side_forward(**data, taps=taps)
    torch.testing.assert_close(on_taps.loss, plain.loss)
    model.ladder_config.loss_chunk_size = 2
    chunked = model(**data)
    chunked.loss.backward()
    torch.testing.assert_close(chunked.loss, plain.loss)
    for n, p in model.side.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-6, msg=n)
    fresh = get_ladder_model(backbone, LadderConfig(reduction_factor=4)).eval()
    full = (
        data["attention_mask"].bool().all(1)
    )  # unpadded prompts: transformers' generate does not move padding
    prompt = {k: v[full] for k, v in data.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        ours = fresh.generate(**prompt, max_new_tokens=5, do_sample=False)
        theirs = backbone.generate(**prompt, max_new_tokens=5, do_sample=False)
    n = theirs.shape[1] if head == "seq2seq_lm" else prompt["input_ids"].shape[1] + 5
    assert torch.equal(ours[:, :n], theirs[:, :n])


def test_the_authors_lm_head_starts_from_nothing():
    """--no-final-shortcut: the authors' LM head reads the side output alone (a near-uniform start)."""
    backbone = tiny_backbone("llama", "causal_lm").eval()
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_shortcut=False)).eval()
    data = tiny_batch("llama", "causal_lm")
    with torch.no_grad():
        loss = model(**data).loss
    vocab = backbone.config.vocab_size
    assert abs(float(loss) - torch.log(torch.tensor(float(vocab)))) < 0.05  # ln V: the side output is ~0


@pytest.mark.parametrize(("family", "head"), [("llama", "causal_lm"), ("bert", "sequence_classification")])
def test_the_learned_gate_starts_as_the_backbone_and_learns_its_share(family, head):
    """final_gate (QST's mix): step 0 is bit-equal to the backbone; one step moves the gate and the up-projection
    gets a gradient once the gate has left 1; the gate is saved and reloaded with the side network."""
    backbone = tiny_backbone(family, head).eval()
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_gate=True))
    batch = tiny_batch(family, head)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, backbone(**inputs).logits, rtol=0, atol=0)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**batch).loss.backward()
    assert model.side.final_gate.grad.abs() > 0 and not model.side.up.weight.grad.any()
    optimizer.step()
    optimizer.zero_grad()
    assert model.side.final_gate.item() != 1.0
    model(**batch).loss.backward()
    assert model.side.up.weight.grad.abs().sum() > 0


def test_the_learned_gate_is_saved_and_needs_the_shortcut(tmp_path):
    backbone = tiny_backbone("llama", "causal_lm")
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_gate=True))
    with torch.no_grad():
        model.side.final_gate.fill_(0.75)
    model.save_pretrained(tmp_path)
    again = LadderModel.from_pretrained(backbone, tmp_path)
    assert again.side.final_gate.item() == 0.75
    with pytest.raises(ConfigError, match="final_gate"):
        get_ladder_model(backbone, LadderConfig(reduction_factor=4, final_gate=True, final_shortcut=False))
