"""Core LST behaviour on tiny random backbones of every supported family and head."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from conftest import CASES, tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, get_ladder_model
from laddertune.core.architectures import FAMILIES


@pytest.mark.parametrize("side_layers", [None, [0, 2]], ids=["all-layers", "dropped-layer-1"])
@pytest.mark.parametrize(("family", "head"), CASES)
def test_training_leaves_backbone_untouched_and_trains_every_side_parameter(family, head, side_layers):
    backbone = tiny_backbone(family, head)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, side_layers=side_layers))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.side.parameters())
    # The backbone must never build an autograd graph: its layers' outputs carry no grad_fn.
    graph_outputs = []
    for layer in model.backbone_layers(next(iter(model.side.stacks))):
        layer.register_forward_hook(
            lambda m, a, o: graph_outputs.append((o[0] if isinstance(o, tuple) else o).requires_grad)
        )
    gates_before = {n: s.gates.detach().clone() for n, s in model.side.stacks.items()}
    optimizer = torch.optim.AdamW(model.side.parameters(), lr=1e-2)
    batch = tiny_batch(family, head)
    losses = []
    # with the final shortcut (classification's default) Up starts at zero: the side below it learns from step 1
    check = 1 if model.ladder_config.final_shortcut else 0
    for step in range(5):  # a few AdamW steps: the loss may rise once before it falls
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
        if step == check:
            missing = [n for n, p in model.side.named_parameters() if p.grad is None or not p.grad.any()]
            assert missing == [], f"side parameters without gradient: {missing}"
        assert all(p.grad is None for p in model.backbone.parameters())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert graph_outputs and not any(graph_outputs)
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "a backbone weight changed"
    for name, stack in model.side.stacks.items():
        moved = (stack.gates.detach() != gates_before[name])[stack.kept]
        assert moved.all(), f"{name}: the gates of kept layers should move"
    assert losses[-1] < losses[0]


def test_regression_head_uses_mse():
    backbone = tiny_backbone("bert", "sequence_classification", num_labels=1)
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4))
    batch = tiny_batch("bert", "sequence_classification", num_labels=1)
    out = model(**batch)
    assert out.logits.shape == (3, 1)
    torch.testing.assert_close(
        out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), batch["labels"])
    )


def _t5_base_on_meta():
    cfg = T.T5Config(
        d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12, num_decoder_layers=12, vocab_size=32128
    )
    return T.T5ForConditionalGeneration(cfg)


@pytest.mark.parametrize(
    ("side_layers", "expected"),
    [
        (None, 5_097_240),  # docs/concepts.md#fact-kept-side-layers: t5-base, all 12 side layers
        # Table 1 list. 3,878,712 because, like the authors' code, every stack keeps one gate per BACKBONE layer
        # (12), dropped layers included; gates only for kept layers would give 3,878,706.
        ([1, 2, 3, 5, 6, 7, 9, 10, 11], 3_878_712),
    ],
)
def test_golden_trainable_counts_t5_base(side_layers, expected):
    # the authors' side network: full-width Down, the backbone's heads
    authors = dict(tap_projection="none", side_attention_heads=0)
    with torch.device("meta"):
        model = get_ladder_model(
            _t5_base_on_meta(), LadderConfig(reduction_factor=8, side_layers=side_layers, **authors)
        )
    trainable, total = model.trainable_parameters()
    assert trainable == expected
    assert total - trainable == 222_903_552  # the backbone, tied embeddings counted once
    stack = model.side.stacks["encoder"]
    assert (
        stack.trunk.config.d_model == 96 and stack.trunk.config.d_ff == 384 and stack.trunk.config.d_kv == 8
    )
    assert stack.trunk.config.num_heads == 12


def test_trainable_counts_t5_base_projected_taps():
    """Projected taps: Down_i reads a 96-wide projected tap (96 x 96 + 96 instead of 768 x 96 + 96: 64,512 fewer per
    ladder, 26 ladders), one 96-wide head (the same q/k/v/o shapes; T5's relative bias 32 x 1 instead of 32 x 12)."""
    with torch.device("meta"):
        model = get_ladder_model(
            _t5_base_on_meta(), LadderConfig(reduction_factor=8, tap_projection="random")
        )
    trainable, _ = model.trainable_parameters()
    assert trainable == 5_097_240 - 26 * 672 * 96 - 2 * 32 * 11
    stack = model.side.stacks["encoder"]
    assert stack.trunk.config.num_heads == 1 and stack.trunk.config.d_kv == 96 and stack.tap_width == 96
    assert model.ladder_config.tap_projection == "random"  # no calibration data given


def test_t5_relative_bias_lives_in_first_kept_side_layer():
    model = get_ladder_model(
        tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4, side_layers=[1, 2])
    )
    for stack in model.side.stacks.values():
        has_bias = [blk.layer[0].SelfAttention.has_relative_attention_bias for blk in stack.layers]
        assert has_bias == [True, False]
        assert stack.kept == [1, 2]


def test_side_decoder_cross_attends_to_side_encoder():
    model = get_ladder_model(tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4)).eval()
    batch = tiny_batch("t5", "seq2seq_lm")
    seen = []
    cross = model.side.stacks["decoder"].layers[0].layer[1]
    cross.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["key_value_states"].shape[-1]), with_kwargs=True
    )
    model(**batch)
    assert seen == [32 // 4]  # side width, not the backbone's


def test_backbone_dropout_option_controls_backbone_mode():
    model = get_ladder_model(tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4))
    model.train()
    assert model.side.training and not model.backbone.training
    noisy = get_ladder_model(
        tiny_backbone("t5", "seq2seq_lm"), LadderConfig(reduction_factor=4, backbone_dropout=True)
    )
    noisy.train()
    assert noisy.backbone.training
    noisy.eval()
    assert not noisy.backbone.training


def test_ladder_mix_matches_the_formula():
    """Before side layer j: s = mu*s + (1-mu)*Down_j(b_i), with mu = sigmoid(alpha/T)."""
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"),
        LadderConfig(reduction_factor=4, gate_init=0.3, tap_projection="random"),
    )
    model.eval()
    stack = model.side.stacks["body"]
    inputs = []
    stack.layers[1].register_forward_pre_hook(lambda m, a, k: inputs.append(a[0]), with_kwargs=True)
    outputs = []
    stack.layers[0].register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o))
    taps = []
    model.backbone.bert.encoder.layer[1].register_forward_hook(
        lambda m, a, o: taps.append(o[0] if isinstance(o, tuple) else o)
    )
    model(**tiny_batch("bert", "sequence_classification"))
    mu = torch.sigmoid(torch.tensor(0.3) / 0.1)
    torch.testing.assert_close(stack.gate_values()[1], mu)
    # Down_j = A_j P_j: the (frozen) tap projection, then the trainable down-projection
    expected = mu * outputs[0] + (1 - mu) * stack.downs[1](stack.projection(taps[0], 1))
    torch.testing.assert_close(inputs[0], expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reduction_factor": 3}, "does not divide"),
        # the backbone's heads, 8 / 16
        ({"reduction_factor": 16, "side_attention_heads": 0}, "per-head size"),
        ({"side_layers": [0, 5]}, "out of range"),
    ],
)
def test_config_that_does_not_fit_the_backbone_is_a_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        get_ladder_model(tiny_backbone("bert", "sequence_classification"), LadderConfig(**kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reduction_factor": 0},
        {"side_layers": []},
        {"side_layers": [1, 1]},
        {"side_layers": [-1]},
        {"init": "pruned"},
        {"gate_temperature": 0},
        {"pruning_chain": "x"},
        {"backbone_dropout": "yes"},
    ],
)
def test_invalid_config_values_are_rejected(kwargs):
    with pytest.raises(ConfigError):
        LadderConfig(**kwargs)


def test_config_json_round_trip(tmp_path):
    cfg = LadderConfig(reduction_factor=4, side_layers=[3, 1], init="magnitude", backbone_dropout=True)
    cfg.save(tmp_path)
    assert LadderConfig.load(tmp_path) == cfg
    assert cfg.side_layers == [1, 3]


def test_unsupported_architecture_says_why(monkeypatch):
    # every tested family is discovered now (ALBERT too); an "unsupported" exception entry still says its reason
    monkeypatch.setitem(FAMILIES, "bert", {"unsupported": "a reason", "why": "a test"})
    with pytest.raises(ConfigError, match="unsupported architecture 'bert': a reason"):
        get_ladder_model(tiny_backbone("bert", "sequence_classification"), LadderConfig())


def test_bare_base_model_without_a_head_says_how_to_give_it_one():
    bare = T.BertModel(
        T.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
        )
    )
    with pytest.raises(
        ConfigError, match="bare base model: pass LadderConfig\\(task_head='sequence_classification'\\)"
    ):
        get_ladder_model(bare, LadderConfig())
    with pytest.raises(ConfigError, match="bare base model"):
        get_ladder_model(bare, LadderConfig(task_head="causal_lm"))


def test_fisher_without_data_is_a_clear_error():
    with pytest.raises(ConfigError, match="calibration_data"):
        get_ladder_model(tiny_backbone("bert", "sequence_classification"), LadderConfig(init="fisher"))


def test_device_dtype_and_ladder_config():
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert isinstance(model.ladder_config, LadderConfig) and model.ladder_config.reduction_factor == 4
    model.to(torch.float64)
    assert model.dtype == torch.float64
