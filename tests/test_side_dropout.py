"""``LadderConfig.side_dropout``: the side trunk's hidden-state dropout, set through the config fields a family
names it by (discovered, not listed), apart from the attention-probability and task-head dropouts; the backbone's
by default; a nonzero value refused where a family has none; kept by checkpoints."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model
from laddertune.core.architectures import set_hidden_dropout


def _side_config(model):
    return next(iter(model.side.stacks.values())).trunk_config


def test_a_value_reaches_every_hidden_dropout_only():
    backbone = tiny_backbone("bert", "sequence_classification", seed=0)
    p0 = backbone.config.hidden_dropout_prob
    assert p0 > 0
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_dropout=0.3),
    )
    config = _side_config(model)
    assert config.hidden_dropout_prob == 0.3
    # attention dropout is its own option
    assert config.attention_probs_dropout_prob == backbone.config.attention_probs_dropout_prob
    assert model.backbone.config.hidden_dropout_prob == p0  # the backbone is untouched
    trunk = next(iter(model.side.stacks.values())).trunk
    hidden = [m for n, m in trunk.named_modules() if isinstance(m, torch.nn.Dropout) and "self" not in n]
    assert len(hidden) == 2 * 3 and all(m.p == 0.3 for m in hidden)  # two per side layer


def test_default_keeps_the_backbones():
    model = get_ladder_model(tiny_backbone("bert", "sequence_classification", seed=0), LadderConfig())
    assert model.ladder_config.side_dropout is None
    assert _side_config(model).hidden_dropout_prob == model.backbone.config.hidden_dropout_prob > 0
    lm = get_ladder_model(tiny_backbone("gpt2", "causal_lm", seed=0), LadderConfig())
    assert _side_config(lm).resid_pdrop == lm.backbone.config.resid_pdrop > 0


def test_with_both_dropouts_zero_a_gpt2_side_trains_deterministically():
    backbone = tiny_backbone("gpt2", "causal_lm", seed=0)
    assert backbone.config.resid_pdrop > 0 and backbone.config.embd_pdrop > 0
    batch = tiny_batch("gpt2", "causal_lm")
    outputs = {}
    for p in (None, 0.0):
        model = get_ladder_model(
            tiny_backbone("gpt2", "causal_lm", seed=0),
            LadderConfig(reduction_factor=4, side_dropout=p, side_attention_dropout=0.0),
        ).train()
        last = next(iter(model.side.stacks.values())).layers[-1]  # what the side computes (Up starts at zero)
        for seed in (1, 2):
            hook = last.register_forward_hook(
                lambda m, a, out, key=(p, seed): outputs.__setitem__(key, out[0])
            )
            torch.manual_seed(seed)
            model(**batch)
            hook.remove()
    assert not torch.equal(outputs[None, 1], outputs[None, 2])  # GPT-2's residual dropout, kept by default
    assert torch.equal(outputs[0.0, 1], outputs[0.0, 2])  # every side dropout off: nothing random is left


@pytest.mark.parametrize(
    ("config", "set_", "kept"),
    [
        (T.BertConfig(), {"hidden_dropout_prob"}, {"attention_probs_dropout_prob"}),
        (T.GPT2Config(), {"resid_pdrop", "embd_pdrop"}, {"attn_pdrop", "summary_first_dropout"}),
        (
            T.BartConfig(dropout=0.1, activation_dropout=0.1, attention_dropout=0.1, classifier_dropout=0.1),
            {"dropout", "activation_dropout"},
            {"attention_dropout", "classifier_dropout", "encoder_layerdrop"},
        ),
        (T.T5Config(classifier_dropout=0.1), {"dropout_rate"}, {"classifier_dropout"}),
        (T.DistilBertConfig(), {"dropout"}, {"attention_dropout", "qa_dropout", "seq_classif_dropout"}),
    ],
    ids=["bert", "gpt2", "bart", "t5", "distilbert"],
)
def test_fields_are_discovered_by_name(config, set_, kept):
    before = {k: getattr(config, k) for k in kept}
    set_hidden_dropout(config, 0.25)
    assert all(getattr(config, k) == 0.25 for k in set_)
    assert {k: getattr(config, k) for k in kept} == before


def test_a_family_without_hidden_dropout_takes_0_only_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="LlamaConfig has no hidden-state dropout to set to 0.1"):
        get_ladder_model(tiny_backbone("llama", "causal_lm", seed=0), LadderConfig(side_dropout=0.1))
    # 0 is what Llama has: asked for, nothing to set
    get_ladder_model(tiny_backbone("llama", "causal_lm", seed=0), LadderConfig(side_dropout=0.0))
    for bad in (1.0, -0.1, True, "0"):
        with pytest.raises(ConfigError, match="side_dropout must be in"):
            LadderConfig(side_dropout=bad)


def test_checkpoint_keeps_it(tmp_path):
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_dropout=0.3),
    )
    model.eval().save_pretrained(tmp_path)
    restored = LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification", seed=0), tmp_path)
    assert restored.ladder_config.side_dropout == 0.3
    assert _side_config(restored).hidden_dropout_prob == 0.3
