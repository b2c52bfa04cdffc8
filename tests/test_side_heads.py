"""The side network's attention heads: the automatic count, key/value grouping, and head-level pruning that keeps
whole backbone heads."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from conftest import tiny_backbone

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.heads import auto_heads, kv_heads_for
from laddertune.errors import ConfigError


@pytest.mark.parametrize(
    ("width", "heads"),
    [(4, 1), (48, 1), (72, 1), (96, 1), (128, 2), (448, 7), (512, 8), (1024, 16), (200, 2)],
)
def test_auto_heads_are_64_wide_or_one_head(width, heads):
    assert auto_heads(width) == heads
    assert width % heads == 0 and (width // heads >= 64 or heads == 1)


def test_kv_heads_keep_the_backbone_grouping_where_it_divides():
    assert kv_heads_for(8, 32, 8) == 2  # Llama-3-8B at r=8: 8 heads, 4 query heads per key/value head
    assert kv_heads_for(1, 9, 3) == 1  # SmolLM2
    assert kv_heads_for(7, 28, 4) == 1  # Qwen2.5-7B
    assert kv_heads_for(16, 64, 8) == 2  # Llama-2-70B
    assert kv_heads_for(4, 4, 4) == 4  # no grouping
    assert kv_heads_for(3, 4, None) is None


@pytest.mark.parametrize(
    ("family", "head"), [("llama", "causal_lm"), ("t5", "seq2seq_lm"), ("bert", "sequence_classification")]
)
def test_side_shapes_follow_the_heads(family, head):
    """Default: one head as wide as the side (8 < 64 here); 0: the authors' backbone heads, d_head / r wide."""
    auto = get_ladder_model(tiny_backbone(family, head), LadderConfig(reduction_factor=4))
    authors = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4, side_attention_heads=0)
    )
    stack = next(iter(auto.side.stacks.values()))
    fields = {"llama": "num_attention_heads", "t5": "num_heads", "bert": "num_attention_heads"}
    assert getattr(stack.trunk_config, fields[family]) == 1 == auto.ladder_config.side_attention_heads
    assert getattr(next(iter(authors.side.stacks.values())).trunk_config, fields[family]) == 4
    if family == "llama":
        assert stack.trunk_config.head_dim == 8 and stack.trunk_config.num_key_value_heads == 1
    if family == "t5":
        assert stack.trunk_config.d_kv == 8
    with pytest.raises(ConfigError, match="does not divide the side width"):
        get_ladder_model(
            tiny_backbone(family, head), LadderConfig(reduction_factor=4, side_attention_heads=3)
        )


def _planted_llama():
    """Tiny Llama (4 query heads of 8, 2 key/value heads) whose key/value head 1 and, in its group, query head 3
    then 2 are the most important by magnitude."""
    backbone = tiny_backbone("llama", "causal_lm")
    with torch.no_grad():
        for layer in backbone.model.layers:
            a = layer.self_attn
            a.k_proj.weight[8:] *= 10
            a.v_proj.weight[8:] *= 10
            a.q_proj.weight[16:24] *= 5  # query head 2
            a.q_proj.weight[24:32] *= 10  # query head 3
    return backbone


def test_head_level_pruning_keeps_whole_heads_llama():
    """Side heads as wide as the backbone's (r=2, 2 heads of 8 sharing 1 key/value head): the best key/value head
    whole, rows in order, and its query heads whole, best first; o_proj reads the same rows."""
    backbone = _planted_llama()
    config = LadderConfig(reduction_factor=2, side_attention_heads=2, init="magnitude", side_layers=[0, 1, 2])
    model = get_ladder_model(backbone, config)
    stack = model.side.stacks["body"]
    assert stack.trunk_config.num_attention_heads == 2 and stack.trunk_config.num_key_value_heads == 1
    hidden = stack.pruned_dims[0]
    for j, layer in enumerate(backbone.model.layers):
        side, back = stack.layers[j].self_attn, layer.self_attn
        kv = torch.arange(8, 16)  # key/value head 1, whole
        q = torch.cat([torch.arange(24, 32), torch.arange(16, 24)])  # query heads 3 then 2, whole
        assert torch.equal(side.k_proj.weight, back.k_proj.weight[kv][:, hidden])
        assert torch.equal(side.v_proj.weight, back.v_proj.weight[kv][:, hidden])
        assert torch.equal(side.q_proj.weight, back.q_proj.weight[q][:, hidden])
        assert torch.equal(side.o_proj.weight, back.o_proj.weight[hidden][:, q])


def test_head_level_pruning_narrow_and_wide_side_heads():
    """A side head narrower than the backbone's takes its best rows inside one backbone head; a wider one takes
    whole heads in rank order (never rows spread over every head, the authors' rule)."""
    backbone = _planted_llama()
    narrow = get_ladder_model(
        backbone, LadderConfig(reduction_factor=4, side_attention_heads=1, init="magnitude", side_layers=[0])
    )
    k = narrow.side.stacks["body"].layers[0].self_attn.k_proj.weight  # 1 head of 8 rows: all in kv head 1
    rows = [
        int(
            (
                backbone.model.layers[0].self_attn.k_proj.weight[:, narrow.side.stacks["body"].pruned_dims[0]]
                == r
            )
            .all(1)
            .nonzero()
        )
        for r in k
    ]
    assert all(8 <= r < 16 for r in rows)
    assert rows == sorted(rows)
    bert = tiny_backbone("bert", "sequence_classification")  # 4 heads of 8
    wide = get_ladder_model(bert, LadderConfig(reduction_factor=2, side_attention_heads=1, init="magnitude"))
    side = wide.side.stacks["body"].layers[0].attention.self.query.weight  # one head of 16: two whole heads
    back = bert.bert.encoder.layer[0].attention.self.query.weight[:, wide.side.stacks["body"].pruned_dims[0]]
    rows = [int((back == r).all(1).nonzero()) for r in side]
    assert (
        sorted({r // 8 for r in rows}) == sorted({rows[0] // 8, rows[8] // 8})
        and len({r // 8 for r in rows}) == 2
    )
    assert rows[:8] == list(range(rows[0], rows[0] + 8)) and rows[8:] == list(range(rows[8], rows[8] + 8))


def test_head_level_pruning_t5_relative_bias_follows_the_heads():
    backbone = tiny_backbone("t5", "seq2seq_lm")  # 4 heads of 8
    with torch.no_grad():
        for stack in (backbone.encoder, backbone.decoder):
            for block in stack.block:
                for n in ("q", "k", "v"):
                    getattr(block.layer[0].SelfAttention, n).weight[16:24] *= 10  # head 2
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, init="magnitude"))  # 1 head of 8
    for name, stack in model.side.stacks.items():
        side = stack.layers[0].layer[0].SelfAttention
        back = getattr(backbone, name).block[0].layer[0].SelfAttention
        assert torch.equal(side.q.weight, back.q.weight[16:24][:, stack.pruned_dims[0]])
        assert torch.equal(side.relative_attention_bias.weight, back.relative_attention_bias.weight[:, [2]])


def test_head_level_pruned_side_runs_every_family_shape():
    """GQA with a side wider than one backbone head: shapes line up and a step runs."""
    cfg = T.LlamaConfig(
        vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
        intermediate_size=128, head_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = get_ladder_model(T.LlamaForCausalLM(cfg), LadderConfig(reduction_factor=2, init="magnitude"))
    ids = torch.randint(3, 64, (2, 6))
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.side.stacks["body"].trunk_config.head_dim == 32
