"""The build-time self-check: a family discovery cannot serve fails in get_ladder_model, in one line.

MPNet's encoder returns a tuple unless asked for a ``ModelOutput`` (``return_dict=False`` by default): the side
network used to build, then crash at its first forward. A deliberately unsupported family (its layers return
dicts) must fail at build with one ConfigError naming what went wrong; the check leaves no trace behind.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T
from conftest import tiny_backbone, tiny_batch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions
from transformers.models.bert.modeling_bert import BertEncoder, BertLayer

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model


def _mpnet() -> T.MPNetForSequenceClassification:
    torch.manual_seed(0)
    config = T.MPNetConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        pad_token_id=0,
    )  # fmt: skip
    return T.MPNetForSequenceClassification(config)


def test_mpnet_trains_saves_and_loads(tmp_path):
    model = get_ladder_model(_mpnet(), LadderConfig(reduction_factor=4))
    batch = tiny_batch("bert", "sequence_classification")
    optimizer = torch.optim.AdamW(model.side.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    model.save_pretrained(tmp_path)
    restored = LadderModel.from_pretrained(_mpnet(), tmp_path).eval()
    torch.testing.assert_close(restored(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_a_backbone_whose_config_returns_tuples_still_runs():
    backbone = tiny_backbone("bert", "sequence_classification")
    backbone.config.return_dict = False  # the backbone's own forward then returns tuples
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4))
    assert model(**tiny_batch("bert", "sequence_classification")).logits.shape == (3, 2)


class _DictLayer(BertLayer):
    """A layer returning a dict: its family's own encoder reads it, LST's taps cannot."""

    def forward(self, *args, **kwargs):
        return {"hidden_states": super().forward(*args, **kwargs)}


class _DictEncoder(BertEncoder):
    def __init__(self, config):
        super().__init__(config)
        self.layer = nn.ModuleList(_DictLayer(config, layer_idx=i) for i in range(config.num_hidden_layers))

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)["hidden_states"]
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden_states)


def test_an_unsupported_family_fails_at_build_in_one_line():
    backbone = tiny_backbone("bert", "sequence_classification")
    backbone.bert.encoder = _DictEncoder(backbone.config)
    assert backbone(**tiny_batch("bert", "sequence_classification")).logits.shape == (3, 2)  # it runs itself
    with pytest.raises(ConfigError) as e:
        get_ladder_model(backbone)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(
        "the side network does not run next to BertForSequenceClassification (family 'bert')"
    )
    assert "a 2-token forward and backward at build time raised" in message


def test_the_check_leaves_no_trace():
    """Same RNG state after the build as a build of the same side network by hand, no gradients, train mode."""
    torch.manual_seed(5)
    model = get_ladder_model(tiny_backbone("llama", "causal_lm"), LadderConfig(reduction_factor=4))
    after_check = torch.rand(3)
    assert model.training and all(p.grad is None for p in model.side.parameters())
    torch.manual_seed(5)
    LadderModel(tiny_backbone("llama", "causal_lm"), LadderConfig(reduction_factor=4))
    assert torch.equal(torch.rand(3), after_check)


@pytest.mark.parametrize(
    ("family", "head"),
    [("t5", "seq2seq_lm"), ("gpt2", "sequence_classification"), ("llama", "sequence_classification")],
)
def test_supported_families_pass_the_check(family, head):
    model = get_ladder_model(tiny_backbone(family, head), LadderConfig(reduction_factor=4))
    assert model.head == head


def test_bart_classifier_passes_the_check():
    """BART's classifier pools at </s>: the check's 2-token batch ends with it."""
    config = T.BartConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, num_labels=3,
    )  # fmt: skip
    model = get_ladder_model(T.BartForSequenceClassification(config))
    assert list(model.side.stacks) == ["encoder"]
