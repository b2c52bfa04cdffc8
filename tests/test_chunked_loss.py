"""The chunked LM loss equals the plain loss (value and gradients) and holds less memory at its peak."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from conftest import tiny_backbone

from laddertune import LadderConfig, get_ladder_model
from laddertune.memory import PeakMemoryMeter


def lm_batch(family: str, b=3, t=11):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 60, (b, t), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100  # prompt positions ignored
    labels[2, -3:] = -100  # padding
    if family == "t5":
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.side.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family,head", [("llama", "causal_lm"), ("gpt2", "causal_lm"), ("t5", "seq2seq_lm")])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_chunked_loss_equals_the_plain_loss_and_its_gradients(family, head, chunk):
    plain = get_ladder_model(tiny_backbone(family, head), LadderConfig(reduction_factor=4, loss_chunk_size=0))
    chunked = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4, loss_chunk_size=chunk)
    )
    chunked.side.load_state_dict(plain.side.state_dict())
    plain.eval(), chunked.eval()  # no dropout: both see the same function (gradients are still on)
    batch = lm_batch(family)
    a, grads_a = loss_and_grads(plain, batch)
    b, grads_b = loss_and_grads(chunked, batch)
    assert b.logits is None and a.logits is not None
    assert torch.allclose(a.loss, b.loss, atol=1e-6, rtol=1e-5), (a.loss, b.loss)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-7, rtol=1e-4), name
    with torch.no_grad():  # evaluation still gets logits
        assert chunked(**batch).logits is not None


def test_chunked_loss_lowers_the_peak_of_a_large_vocabulary():
    torch.manual_seed(0)
    cfg = T.LlamaConfig(
        vocab_size=8192,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        pad_token_id=0,
    )
    ids = torch.randint(3, 8000, (4, 128))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    peaks = {}
    for chunk in (None, 16):
        model = get_ladder_model(
            T.LlamaForCausalLM(cfg), LadderConfig(reduction_factor=4, loss_chunk_size=chunk)
        )
        model(**batch).loss.backward()  # warm-up: gradients exist in both measured steps
        meter = PeakMemoryMeter(model, device="cpu")
        with meter.phase("train"):
            model(**batch).loss.backward()
        peaks[chunk] = meter.report().peak("train")
    logits_bytes = 4 * 128 * 8192 * 4  # one (B, T, V) float32 tensor
    assert peaks[None] - peaks[16] > 2 * logits_bytes, peaks  # logits, their gradient, the log-softmax...


def test_the_chunked_loss_costs_no_more_flops_than_the_plain_loss():
    """The frozen head's input gradient is taken in the forward pass: its matmul runs twice (logits, gradient) as in
    the plain loss, not a third time to recompute the logits in the backward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    cfg = T.LlamaConfig(
        vocab_size=8192, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, pad_token_id=0,
    )  # fmt: skip
    ids = torch.randint(3, 8000, (2, 64))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    flops = {}
    for chunk in (0, 16):
        model = get_ladder_model(
            T.LlamaForCausalLM(cfg), LadderConfig(reduction_factor=4, loss_chunk_size=chunk)
        )
        with FlopCounterMode(display=False) as counter:
            model(**batch).loss.backward()
        flops[chunk] = counter.get_total_flops()
    per_position = 2 * (2 * 32 * 8192)  # the head's logits and their input gradient for one position
    # the plain loss also projects each row's last position, which predicts nothing; the chunked one skips them
    assert flops[0] - 1.01 * 2 * per_position <= flops[16] <= flops[0], flops
