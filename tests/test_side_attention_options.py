"""The side trunk's attention options, ``LadderConfig.side_attention_dropout`` (the attention-probability dropout,
set through the field the family's config names it by, discovered; refused where the family has none) and
``side_attention_heads`` (the head count: same weight shapes, wider heads; refused where a family fixes its head
size or groups key/value heads), both kept by checkpoints."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model


def _side_stack(model):
    return next(iter(model.side.stacks.values()))


def _side_config(model):
    return _side_stack(model).trunk_config


def test_default_keeps_the_backbones_and_a_value_reaches_every_side_attention():
    backbone = tiny_backbone("bert", "sequence_classification", seed=0)
    p0 = backbone.config.attention_probs_dropout_prob
    assert p0 > 0
    plain = get_ladder_model(backbone, LadderConfig(reduction_factor=4))
    assert _side_config(plain).attention_probs_dropout_prob == p0
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_attention_dropout=0.0),
    )
    assert _side_config(model).attention_probs_dropout_prob == 0.0
    assert model.backbone.config.attention_probs_dropout_prob == p0  # the backbone is untouched
    attn = [m for n, m in model.side.named_modules() if n.endswith("attention.self")]
    assert attn and all(m.dropout.p == 0.0 for m in attn)
    # hidden dropout stays on: the option is attention-only
    assert _side_config(model).hidden_dropout_prob == backbone.config.hidden_dropout_prob


def test_llama_field_is_discovered_and_train_mode_is_deterministic_at_zero():
    backbone = tiny_backbone("llama", "causal_lm", seed=0)
    backbone.config.attention_dropout = 0.5
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, side_attention_dropout=0.0)).train()
    layers = next(iter(model.side.stacks.values())).layers
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in layers)
    batch = tiny_batch("llama", "causal_lm")
    losses = []
    for seed in (1, 2):  # Llama has no other dropout: with attention dropout 0, train mode is deterministic
        torch.manual_seed(seed)
        losses.append(model(**batch).loss.detach())
    assert torch.equal(losses[0], losses[1])


def test_t5_has_no_attention_only_dropout_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="T5Config has no attention-only dropout"):
        get_ladder_model(tiny_backbone("t5", "seq2seq_lm", seed=0), LadderConfig(side_attention_dropout=0.0))
    for bad in (1.0, -0.1, True, "0"):
        with pytest.raises(ConfigError, match="side_attention_dropout must be in"):
            LadderConfig(side_attention_dropout=bad)


def test_heads_change_the_split_not_the_shapes_and_the_side_trains():
    batch = tiny_batch("bert", "sequence_classification")
    plain = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_attention_heads=0),  # the backbone's heads
    )
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_attention_heads=1),
    )
    assert _side_stack(plain).trunk_config.num_attention_heads > 1
    assert _side_stack(model).trunk_config.num_attention_heads == 1
    assert model.backbone.config.num_attention_heads == plain.backbone.config.num_attention_heads  # untouched
    attn = [m for n, m in model.side.named_modules() if n.endswith("attention.self")]
    assert attn and all(m.num_attention_heads == 1 for m in attn)
    shapes = {n: p.shape for n, p in model.side.named_parameters()}
    assert shapes == {n: p.shape for n, p in plain.side.named_parameters()}
    # the same weights split into other heads give other outputs: the option reaches the computation
    model.side.load_state_dict(plain.side.state_dict())
    outputs = []
    for m in (model, plain):
        hook = _side_stack(m).layers[-1].register_forward_hook(lambda mod, args, out: outputs.append(out[0]))
        m.eval()(**batch)
        hook.remove()
    assert not torch.allclose(outputs[0], outputs[1])
    model.train()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and all(
        p.grad is not None for p in model.side.parameters() if p.requires_grad and p.dim() > 1
    )


def test_magnitude_init_works_with_fewer_heads():
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_attention_heads=1, init="magnitude"),
    )
    assert _side_stack(model).trunk_config.num_attention_heads == 1
    assert torch.isfinite(model.eval()(**tiny_batch("bert", "sequence_classification")).logits).all()


@pytest.mark.parametrize(("family", "head"), [("t5", "seq2seq_lm"), ("llama", "causal_lm")])
def test_families_that_fix_the_head_size_take_it_too(family, head):
    """T5's d_kv and Llama's head_dim follow the side's heads (tests/test_side_heads.py checks the shapes)."""
    model = get_ladder_model(
        tiny_backbone(family, head, seed=0), LadderConfig(reduction_factor=2, side_attention_heads=1)
    )
    config = _side_stack(model).trunk_config
    field, width, heads = (
        ("d_kv", "d_model", "num_heads") if family == "t5" else ("head_dim", "hidden_size", "")
    )
    heads = heads or "num_attention_heads"
    assert getattr(config, heads) == 1 and getattr(config, field) == getattr(config, width) == 16  # 32 / r=2


def test_bad_head_counts_are_refused():
    with pytest.raises(ConfigError, match=r"side_attention_heads 3 does not divide the side width"):
        get_ladder_model(
            tiny_backbone("bert", "sequence_classification", seed=0),
            LadderConfig(reduction_factor=4, side_attention_heads=3),
        )
    for bad in (-1, True, 2.0, "2"):  # 0: the backbone's heads
        with pytest.raises(ConfigError, match="side_attention_heads must be an integer"):
            LadderConfig(side_attention_heads=bad)


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("side_attention_dropout", 0.0, "attention_probs_dropout_prob"),
        ("side_attention_heads", 1, "num_attention_heads"),
    ],
)
def test_checkpoint_keeps_it(tmp_path, option, value, field):
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, **{option: value}),
    )
    model.eval().save_pretrained(tmp_path)
    restored = LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification", seed=0), tmp_path)
    assert getattr(restored.ladder_config, option) == value
    assert getattr(_side_config(restored), field) == value
    batch = tiny_batch("bert", "sequence_classification")
    torch.testing.assert_close(restored.eval()(**batch).logits, model(**batch).logits, rtol=0, atol=0)
