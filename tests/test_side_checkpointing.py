"""Activation checkpointing of the side layers (``LadderConfig.side_checkpointing``): same losses and gradients,
less saved for the backward, backbone untouched, checkpoints unaffected."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model

CASES = [("bert", "sequence_classification"), ("llama", "causal_lm"), ("t5", "seq2seq_lm")]


def _model(family, head, checkpointing, **kw):
    backbone = tiny_backbone(family, head, seed=0)
    torch.manual_seed(3)  # the same side initialisation for both models
    cfg = LadderConfig(reduction_factor=4, side_checkpointing=checkpointing, **kw)
    return get_ladder_model(backbone, cfg).train()


def _step(model, batch):
    """Forward + backward in train mode (side dropout on); returns the loss and the saved-for-backward bytes."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(7)  # the same dropout masks in both models
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach(), sum(saved)


@pytest.mark.parametrize(("family", "head"), CASES)
def test_same_loss_and_gradients_less_saved_backbone_untouched(family, head):
    batch = tiny_batch(family, head)
    plain, ckpt = _model(family, head, False), _model(family, head, True)
    before = {k: v.clone() for k, v in ckpt.backbone.state_dict().items()}
    loss_plain, saved_plain = _step(plain, batch)
    loss_ckpt, saved_ckpt = _step(ckpt, batch)
    # The recomputation replays the same ops on the same inputs with the same RNG state (dropout masks are
    # restored): the loss is bit-identical. Gradients are compared within float32 rounding only because the
    # backward may add the contributions to a shared parameter (the gate vector, T5's relative bias) in
    # another order.
    assert torch.equal(loss_plain, loss_ckpt)
    grads = {n: p.grad for n, p in plain.side.named_parameters()}
    for name, p in ckpt.side.named_parameters():
        if grads[name] is None:
            assert p.grad is None, name
            continue
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert sum(p.grad is not None for p in ckpt.side.parameters()) > 0
    # Only layer inputs and taps are kept by the checkpointed layers (and the non-layer parts as before).
    assert saved_ckpt < 0.8 * saved_plain, (saved_ckpt, saved_plain)
    for k, v in ckpt.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in ckpt.backbone.parameters())


def test_eval_and_generation_do_not_checkpoint_and_agree():
    plain, ckpt = _model("llama", "causal_lm", False).eval(), _model("llama", "causal_lm", True).eval()
    batch = tiny_batch("llama", "causal_lm")
    torch.testing.assert_close(ckpt(**batch).logits, plain(**batch).logits, rtol=0, atol=0)
    prompt = batch["input_ids"][:1, :4]
    ours = ckpt.generate(prompt, max_new_tokens=3, do_sample=False)
    assert torch.equal(ours, plain.generate(prompt, max_new_tokens=3, do_sample=False))
    ckpt.train()
    with torch.no_grad():  # no backward follows: nothing to recompute
        torch.testing.assert_close(ckpt(**batch).logits, plain.train()(**batch).logits, rtol=0, atol=0)


def test_save_load_unaffected(tmp_path):
    ckpt = _model("bert", "sequence_classification", True)
    _step(ckpt, tiny_batch("bert", "sequence_classification"))
    assert (
        ckpt.side.state_dict().keys()
        == _model("bert", "sequence_classification", False).side.state_dict().keys()
    )
    ckpt.eval().save_pretrained(tmp_path)
    restored = LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification", seed=0), tmp_path)
    assert restored.ladder_config.side_checkpointing is True
    batch = tiny_batch("bert", "sequence_classification")
    torch.testing.assert_close(restored.eval()(**batch).logits, ckpt(**batch).logits, rtol=0, atol=0)


def test_side_layers_subset_and_bad_value():
    batch = tiny_batch("t5", "seq2seq_lm")
    plain = _model("t5", "seq2seq_lm", False, side_layers=[1, 2])
    ckpt = _model("t5", "seq2seq_lm", True, side_layers=[1, 2])
    assert torch.equal(_step(plain, batch)[0], _step(ckpt, batch)[0])
    with pytest.raises(ConfigError, match="side_checkpointing must be true or false"):
        LadderConfig(side_checkpointing="yes")


def test_bf16_autocast_recomputes_in_bf16():
    """The recomputation runs under the forward's autocast state (torch's checkpoint records it): same loss."""
    batch = tiny_batch("bert", "sequence_classification")
    losses = []
    for flag in (False, True):
        model = _model("bert", "sequence_classification", flag)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = _step(model, batch)
        losses.append(loss)
        assert all(
            p.grad is not None and p.grad.dtype == torch.float32 for p in model.side.stacks.parameters()
        )
    assert torch.equal(losses[0], losses[1])


def test_activation_checkpointing_enable_switches_side_checkpointing():
    """The PreTrainedModel switches (what Trainer calls) turn a plain model into the checkpointed one."""
    batch = tiny_batch("llama", "causal_lm")
    built, switched = _model("llama", "causal_lm", True), _model("llama", "causal_lm", False)
    assert not switched.is_activation_checkpointing
    _, saved_plain = _step(switched, batch)
    switched.zero_grad(set_to_none=True)
    switched.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert switched.is_activation_checkpointing and switched.ladder_config.side_checkpointing
    loss_built, saved_built = _step(built, batch)
    loss_switched, saved_switched = _step(switched, batch)
    assert torch.equal(loss_built, loss_switched) and saved_switched == saved_built < 0.8 * saved_plain
    grads = dict(built.side.named_parameters())
    for name, p in switched.side.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name].grad, rtol=0, atol=0, msg=name)
    switched.gradient_checkpointing_disable()
    assert not switched.is_gradient_checkpointing and _step(switched, batch)[1] == saved_plain
    switched.gradient_checkpointing_enable()  # the older name; wrapping twice would recompute twice
    assert _step(switched, batch)[1] == saved_built


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(activation_checkpointing_kwargs={"use_reentrant": True}), "takes no options"),
        (dict(every_n_layers=2), "takes no options"),
        (dict(offload=True), "takes no options"),
    ],
)
def test_activation_checkpointing_options_the_side_cannot_do_are_refused(kwargs, message):
    model = _model("bert", "sequence_classification", False)
    with pytest.raises(ConfigError, match=message):
        model.activation_checkpointing_enable(**kwargs)
    assert not model.is_activation_checkpointing


def test_activation_checkpointing_is_lst_only():
    torch.manual_seed(3)
    backbone = tiny_backbone("bert", "sequence_classification", seed=0)
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, method="side-tuning"))
    with pytest.raises(ConfigError, match="LST's side layers only"):
        model.activation_checkpointing_enable()
    model.activation_checkpointing_disable()  # switching off is always allowed
