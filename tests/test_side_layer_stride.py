"""Layer dropping by default: deep stacks get a side layer on every other backbone layer, shallow ones on all."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.config import DEEP_STACK
from laddertune.errors import ConfigError


def llama(layers: int, head=T.LlamaForCausalLM):
    torch.manual_seed(0)
    cfg = T.LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, pad_token_id=0,
    )  # fmt: skip
    return head(cfg)


def kept(model) -> list[int]:
    return model.side.stacks[next(iter(model.side.stacks))].kept


def test_a_deep_stack_keeps_every_other_side_layer_as_the_paper_does():
    model = get_ladder_model(llama(DEEP_STACK), LadderConfig(reduction_factor=4))
    assert kept(model) == list(range(1, DEEP_STACK, 2))  # the paper's t5-large list: the odd layers 1..23
    assert model.ladder_config.side_layer_stride == 2  # saved resolved
    assert len(model.side.stacks[next(iter(model.side.stacks))].layers) == DEEP_STACK // 2


def test_a_shallow_stack_keeps_every_side_layer():
    model = get_ladder_model(llama(DEEP_STACK - 1), LadderConfig(reduction_factor=4))
    assert kept(model) == list(range(DEEP_STACK - 1))
    assert model.ladder_config.side_layer_stride == 1


@pytest.mark.parametrize("stride, expected", [(1, list(range(6))), (3, [2, 5]), (4, [3]), (9, [5])])
def test_an_explicit_stride(stride, expected):
    model = get_ladder_model(llama(6), LadderConfig(reduction_factor=4, side_layer_stride=stride))
    assert kept(model) == expected


def test_explicit_side_layers_keep_their_list_on_a_deep_stack():
    model = get_ladder_model(llama(DEEP_STACK), LadderConfig(reduction_factor=4, side_layers=[0, 5]))
    assert kept(model) == [0, 5] and model.ladder_config.side_layer_stride == 1


def test_side_layers_and_a_stride_together_are_one_config_error():
    with pytest.raises(ConfigError, match="side_layers and side_layer_stride"):
        LadderConfig(side_layers=[1, 2], side_layer_stride=2)


def test_a_config_saved_before_the_stride_existed_keeps_every_layer(tmp_path):
    data = LadderConfig(reduction_factor=4).to_dict()
    del data["side_layer_stride"]
    (tmp_path / "ladder_config.json").write_text(json.dumps(data))
    loaded = LadderConfig.load(tmp_path)
    assert loaded.side_layer_stride == 1
    assert kept(get_ladder_model(llama(DEEP_STACK), loaded)) == list(range(DEEP_STACK))


def test_a_saved_deep_model_reloads_with_the_same_side_layers(tmp_path):
    model = get_ladder_model(llama(DEEP_STACK), LadderConfig(reduction_factor=4))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "ladder_config.json").read_text())["side_layer_stride"] == 2
    again = LadderConfig.load(tmp_path)
    assert kept(get_ladder_model(llama(DEEP_STACK), again)) == kept(model)
