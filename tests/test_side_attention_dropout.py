"""``LadderConfig.side_attention_dropout``: the side trunk's attention-probability dropout, set through the field the
family's config names it by (discovered), refused where the family has none, kept by checkpoints."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model


def _side_config(model):
    return next(iter(model.side.stacks.values())).trunk_config


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


def test_checkpoint_keeps_it(tmp_path):
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_attention_dropout=0.0),
    )
    model.eval().save_pretrained(tmp_path)
    restored = LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification", seed=0), tmp_path)
    assert restored.ladder_config.side_attention_dropout == 0.0
    assert _side_config(restored).attention_probs_dropout_prob == 0.0
    batch = tiny_batch("bert", "sequence_classification")
    torch.testing.assert_close(restored.eval()(**batch).logits, model(**batch).logits, rtol=0, atol=0)
