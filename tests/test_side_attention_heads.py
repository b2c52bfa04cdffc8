"""``LadderConfig.side_attention_heads``: the side trunk's head count (same weight shapes, wider heads), refused
where a family fixes its head size or groups key/value heads, kept by checkpoints."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model


def _stack(model):
    return next(iter(model.side.stacks.values()))


def test_heads_change_the_split_not_the_shapes_and_the_side_trains():
    batch = tiny_batch("bert", "sequence_classification")
    plain = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0), LadderConfig(reduction_factor=4)
    )
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_attention_heads=1),
    )
    assert _stack(plain).trunk_config.num_attention_heads > 1
    assert _stack(model).trunk_config.num_attention_heads == 1
    assert model.backbone.config.num_attention_heads == plain.backbone.config.num_attention_heads  # untouched
    attn = [m for n, m in model.side.named_modules() if n.endswith("attention.self")]
    assert attn and all(m.num_attention_heads == 1 for m in attn)
    shapes = {n: p.shape for n, p in model.side.named_parameters()}
    assert shapes == {n: p.shape for n, p in plain.side.named_parameters()}
    # the same weights split into other heads give other outputs: the option reaches the computation
    model.side.load_state_dict(plain.side.state_dict())
    outputs = []
    for m in (model, plain):
        hook = _stack(m).layers[-1].register_forward_hook(lambda mod, args, out: outputs.append(out[0]))
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
    assert _stack(model).trunk_config.num_attention_heads == 1
    assert torch.isfinite(model.eval()(**tiny_batch("bert", "sequence_classification")).logits).all()


@pytest.mark.parametrize(
    ("family", "head", "message"),
    [
        ("t5", "seq2seq_lm", "T5Config sets the per-head size in d_kv"),
        ("llama", "causal_lm", "LlamaConfig sets the per-head size in head_dim"),
    ],
)
def test_families_that_fix_the_head_size_refuse_it(family, head, message):
    with pytest.raises(ConfigError, match=message):
        get_ladder_model(
            tiny_backbone(family, head, seed=0), LadderConfig(reduction_factor=2, side_attention_heads=1)
        )


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match=r"side_attention_heads 3 does not divide the side width"):
        get_ladder_model(
            tiny_backbone("bert", "sequence_classification", seed=0),
            LadderConfig(reduction_factor=4, side_attention_heads=3),
        )
    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(ConfigError, match="side_attention_heads must be a positive integer"):
            LadderConfig(side_attention_heads=bad)


def test_checkpoint_keeps_it(tmp_path):
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification", seed=0),
        LadderConfig(reduction_factor=4, side_attention_heads=1),
    )
    model.eval().save_pretrained(tmp_path)
    restored = LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification", seed=0), tmp_path)
    assert restored.ladder_config.side_attention_heads == 1
    assert _stack(restored).trunk_config.num_attention_heads == 1
    batch = tiny_batch("bert", "sequence_classification")
    torch.testing.assert_close(restored.eval()(**batch).logits, model(**batch).logits, rtol=0, atol=0)
