"""transformers' generate() on a LadderModel: cached decoding equals uncached step-by-step decoding, and beam search
keeps the backbone's and the side network's caches aligned (its scores equal an uncached rescoring)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone
from transformers import DynamicCache

from laddertune import LadderCache, LadderConfig, get_ladder_model

LM_CASES = [("t5", "seq2seq_lm"), ("llama", "causal_lm"), ("gpt2", "causal_lm")]


def _model(family, head):
    model = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4, side_layers=[0, 2])
    )
    # A fresh side network adds nothing (the up-projection starts at zero); scale it so that the side matters.
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


def _log_likelihood(model, ids, mask, new):
    """Uncached rescoring: the summed log-probability of the generated tokens ``new`` (N, T) after each prompt."""
    with torch.no_grad():
        if model.head == "seq2seq_lm":
            dec = torch.cat([torch.zeros(new.shape[0], 1, dtype=torch.long), new], 1)
            logp = torch.log_softmax(model(ids, mask, decoder_input_ids=dec).logits, -1)[:, :-1]
        else:
            full = torch.cat([ids, new], 1)
            full_mask = torch.cat([mask, torch.ones_like(new)], 1)
            positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(full, full_mask, position_ids=positions).logits
            logp = torch.log_softmax(logits, -1)[:, ids.shape[1] - 1 : -1]
    return logp.gather(-1, new[..., None]).squeeze(-1).sum(-1)


@pytest.mark.parametrize(("family", "head"), LM_CASES)
def test_cached_greedy_equals_uncached_step_by_step(family, head):
    model = _model(family, head)
    ids, mask = _prompts(family)
    steps = 6
    cached = model.generate(ids, mask, max_new_tokens=steps, min_new_tokens=steps)
    reference = _uncached_greedy(model, ids, mask, steps)
    assert torch.equal(cached, reference)
    assert len(set(cached[:, -steps:].flatten().tolist())) > 1, (
        "degenerate test: the output is one repeated token"
    )


@pytest.mark.parametrize(("family", "head"), LM_CASES)
def test_beam_search_scores_match_an_uncached_rescoring(family, head):
    """If either cache were misaligned with its beam, a cached beam score would not match a clean rescoring."""
    model = _model(family, head)
    ids, mask = _prompts(family)
    beams, steps = 3, 5
    out = model.generate(
        ids, mask, num_beams=beams, num_return_sequences=2, max_new_tokens=steps, min_new_tokens=steps,
        length_penalty=0.0, return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    start = ids.shape[1] if head == "causal_lm" else 1
    new = out.sequences[:, start:]
    assert new.shape == (4, steps)
    prompts = ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
    torch.testing.assert_close(
        out.sequences_scores, _log_likelihood(model, *prompts, new), rtol=1e-4, atol=1e-4
    )
    # the rows of one prompt are its two best beams, best first, and they differ
    assert (out.sequences_scores[0::2] >= out.sequences_scores[1::2]).all()
    assert not torch.equal(new[0], new[1])


@pytest.mark.parametrize(("family", "head"), LM_CASES)
def test_beam_search_finds_at_least_the_greedy_likelihood(family, head):
    model = _model(family, head)
    ids, mask = _prompts(family)
    start = ids.shape[1] if head == "causal_lm" else 1
    kw = dict(max_new_tokens=4, min_new_tokens=4)
    greedy = model.generate(ids, mask, **kw)[:, start:]
    beam = model.generate(ids, mask, num_beams=4, length_penalty=0.0, **kw)[:, start:]
    assert (_log_likelihood(model, ids, mask, beam) >= _log_likelihood(model, ids, mask, greedy) - 1e-5).all()


def test_generate_stops_at_eos_and_pads():
    model = _model("llama", "causal_lm")
    ids, mask = _prompts("llama")
    free = model.generate(ids, mask, max_new_tokens=6, min_new_tokens=6)
    eos = int(free[0, ids.shape[1]])  # make the first generated token of row 0 the stop token
    out = model.generate(ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    assert out[0, ids.shape[1]] == eos
    assert (out[0, ids.shape[1] + 1 :] == 0).all()


def test_generate_rejects_classification_models():
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    assert not model.can_generate() and not hasattr(model, "generate")


def test_ladder_cache_applies_every_operation_to_both_caches():
    def filled(batch):
        cache = DynamicCache()
        cache.update(torch.arange(batch * 6.0).view(batch, 1, 3, 2), torch.zeros(batch, 1, 3, 2), 0)
        return cache

    cache = LadderCache(filled(2), filled(2))
    assert cache.get_seq_length() == 3 and len(cache) == 1
    cache.batch_repeat_interleave(2)  # rows 0, 0, 1, 1
    cache.reorder_cache(torch.tensor([3, 0, 1, 2]))  # rows 1, 0, 0, 1
    cache.crop(-1)
    for half in (cache.backbone, cache.side):
        keys = half.layers[0].keys
        assert keys.shape == (4, 1, 2, 2)
        assert keys[:, 0, 0, 0].tolist() == [6.0, 0.0, 0.0, 6.0]
    cache.batch_select_indices(torch.tensor([0]))
    assert cache.backbone.layers[0].keys.shape[0] == cache.side.layers[0].keys.shape[0] == 1
    empty = LadderCache()
    assert empty.get_seq_length() == 0 and len(empty) == 0
    empty.reorder_cache(torch.tensor([0]))  # nothing cached yet: a no-op
    with pytest.raises(TypeError, match="LadderCache"):
        cache.update(None, None, 0)
