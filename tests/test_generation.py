"""generate(): cached decoding equals uncached step-by-step decoding; beam search keeps both caches aligned."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.generation import _beam_search, _Decoder

LM_CASES = [("t5", "seq2seq_lm"), ("llama", "causal_lm"), ("gpt2", "causal_lm")]


def _model(family, head):
    model = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4, side_layers=[0, 2])
    )
    # Random side weights barely move the logits; scale the up-projection so the side network matters.
    torch.nn.init.normal_(model.side.up.weight, std=1.0)
    return model.eval()


def _prompts(family):
    ids = torch.tensor([[5, 9, 13, 22, 7], [0, 0, 31, 40, 11]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])  # decoder-only prompts are LEFT-padded
    if family == "t5":
        ids, mask = (
            torch.tensor([[5, 9, 13, 22, 7], [31, 40, 11, 0, 0]]),
            torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]),
        )
    return ids, mask


def _uncached_greedy(model, ids, mask, steps):
    """Reference: recompute the whole sequence at every step, no cache anywhere."""
    if model.head == "seq2seq_lm":
        dec = torch.zeros(ids.shape[0], 1, dtype=torch.long)
        for _ in range(steps):
            logits = model(ids, mask, decoder_input_ids=dec).logits[:, -1]
            dec = torch.cat([dec, logits.argmax(-1, keepdim=True)], 1)
        return dec
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(ids, mask, position_ids=positions).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids


@pytest.mark.parametrize(("family", "head"), LM_CASES)
def test_cached_greedy_equals_uncached_step_by_step(family, head):
    model = _model(family, head)
    ids, mask = _prompts(family)
    steps = 6
    cached = model.generate(ids, mask, max_new_tokens=steps, eos_token_id=-1)
    reference = _uncached_greedy(model, ids, mask, steps)
    assert torch.equal(cached, reference)
    assert len(set(cached[:, -steps:].flatten().tolist())) > 1, (
        "degenerate test: the output is one repeated token"
    )


@pytest.mark.parametrize(("family", "head"), LM_CASES)
def test_beam_search_scores_match_an_uncached_rescoring(family, head):
    """If either cache were misaligned with its beam, the cached beam score would not match a clean rescoring."""
    model = _model(family, head)
    ids, mask = _prompts(family)
    beams, steps = 3, 5
    with torch.no_grad():
        decoder = _Decoder(model, ids, mask, beams)
        sequences, scores = _beam_search(decoder, ids.shape[0], beams, steps, eos=-1, pad=0, penalty=0.0)
        assert sequences.shape == (2, steps)
        for b in range(2):
            if model.head == "seq2seq_lm":
                dec = torch.cat([torch.zeros(1, 1, dtype=torch.long), sequences[b : b + 1]], 1)
                logp = torch.log_softmax(
                    model(ids[b : b + 1], mask[b : b + 1], decoder_input_ids=dec).logits, -1
                )
                total = logp[0, :-1].gather(-1, sequences[b, :, None]).sum()
            else:
                full = torch.cat([ids[b : b + 1], sequences[b : b + 1]], 1)
                full_mask = torch.cat([mask[b : b + 1], torch.ones(1, steps, dtype=torch.long)], 1)
                positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
                logp = torch.log_softmax(model(full, full_mask, position_ids=positions).logits, -1)
                p = ids.shape[1]
                total = logp[0, p - 1 : -1].gather(-1, sequences[b, :, None]).sum()
            torch.testing.assert_close(scores[b], total, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("family", "head"), LM_CASES)
def test_beam_search_finds_at_least_the_greedy_likelihood(family, head):
    model = _model(family, head)
    ids, mask = _prompts(family)
    with torch.no_grad():
        _, greedy_scores = _beam_search(_Decoder(model, ids, mask, 1), 2, 1, 4, eos=-1, pad=0, penalty=0.0)
        _, beam_scores = _beam_search(_Decoder(model, ids, mask, 4), 2, 4, 4, eos=-1, pad=0, penalty=0.0)
    assert (beam_scores >= greedy_scores - 1e-5).all()
    out = model.generate(ids, mask, max_new_tokens=4, num_beams=4)
    assert out.shape[0] == 2


def test_generate_stops_at_eos_and_pads():
    model = _model("llama", "causal_lm")
    ids, mask = _prompts("llama")
    free = model.generate(ids, mask, max_new_tokens=6, eos_token_id=-1)
    eos = int(free[0, ids.shape[1]])  # make the first generated token of row 0 the stop token
    out = model.generate(ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    assert out[0, ids.shape[1]] == eos
    assert (out[0, ids.shape[1] + 1 :] == 0).all()


def test_generate_rejects_classification_models():
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    with pytest.raises(ValueError, match="seq2seq or causal"):
        model.generate(torch.tensor([[3, 4]]))
