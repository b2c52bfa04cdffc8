"""Every decoding strategy transformers ships, on LadderModels of tiny Llama, GPT-2, T5 and BART.

A fresh LadderModel (the final shortcut, its up-projection at zero) computes its backbone's logits bit for bit, so
each strategy must return exactly what the backbone's own ``generate`` returns: greedy, beam search with two
returned sequences, sampling and beam sampling under one seed, logits processors, a prefix-constrained beam search,
prompt-lookup and assisted decoding, ``stop_strings``. With a side network that matters (a random up-projection),
assisted and prompt-lookup decoding (which crop both caches after rejected candidates) must equal plain greedy,
the streamer must stream what is returned, and a ``GenerationConfig`` file must drive ``generate``.
"""

from __future__ import annotations

import pytest
import torch
from test_families import MATRIX, tiny
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, TextStreamer

from laddertune import LadderConfig, LadderModel, get_ladder_model

FAMILIES = ["llama", "gpt2", "t5", "bart"]
# ChatML-like in the tiny vocabulary: t5 opens a turn, t6 / t7 name the user / the assistant, t1 (eos) ends it
CHAT = (
    "{% for m in messages %}{{ 't5 ' + ('t6' if m['role'] == 'user' else 't7') + ' ' + m['content'] + ' t1 ' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 't5 t7 ' }}{% endif %}"
)


def numbered_tokenizer(vocab: int = 64) -> PreTrainedTokenizerFast:
    """A word-piece tokenizer of ``vocab`` words ``t0 .. t{vocab-1}`` (token i is ``t{i}``): pad t0, eos t1, bos t2,
    for the tiny models' ids; decoding joins the words with spaces. Its chat template is ChatML-like. A few letters
    (ids from ``vocab``, never generated) let any word be tokenized, as ``stop_strings`` needs."""
    words = [f"t{i}" for i in range(vocab)] + [*"abcdef", *(f"##{c}" for c in "abcdef")]
    tk = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="t4"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="t0", eos_token="t1", bos_token="t2", unk_token="t4"
    )
    tok.chat_template = CHAT
    return tok


def head_of(name: str) -> str:
    return "seq2seq_lm" if "seq2seq_lm" in MATRIX[name][2] else "causal_lm"


def pair(name: str, side_matters: bool = False):
    """(backbone, LadderModel) of family ``name``; ``side_matters``: a random up-projection, so the side counts."""
    backbone = tiny(name, head_of(name))
    # the authors' side (full-width taps, the backbone's heads): with it the random up-projection below moves every
    # family's greedy tokens away from the backbone's (the defaults' narrower side leaves tiny T5's unchanged)
    config = LadderConfig(reduction_factor=4, tap_projection="none", side_attention_heads=0)
    model = get_ladder_model(backbone, config).eval()
    if side_matters:
        torch.manual_seed(1)
        torch.nn.init.normal_(model.side.up.weight, std=1.0)
    return backbone, model


def prompts(name: str, batch: int = 2):
    """Left-padded prompts for decoder-only models, right-padded sources for encoder-decoders."""
    second = [0, 0, 0, 0, 31, 40, 11] if head_of(name) == "causal_lm" else [31, 40, 11, 0, 0, 0, 0]
    ids = torch.tensor([[5, 9, 13, 22, 7, 9, 13], second])[:batch]
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _assistant(name: str):
    return tiny(name, head_of(name), seed=3)  # another tiny model of the family, same vocabulary


STRATEGIES = {
    "greedy": dict(max_new_tokens=6),
    "beam_2_returned": dict(num_beams=3, num_return_sequences=2, max_new_tokens=6),
    "sample": dict(do_sample=True, temperature=1.5, top_k=20, top_p=0.9, max_new_tokens=6),
    "sample_3_returned": dict(do_sample=True, num_return_sequences=3, max_new_tokens=6),
    "beam_sample": dict(do_sample=True, num_beams=2, max_new_tokens=6),
    "processors": dict(repetition_penalty=1.3, no_repeat_ngram_size=2, bad_words_ids=[[9]], max_new_tokens=6),
    "prefix_constrained_beam": dict(
        num_beams=2, prefix_allowed_tokens_fn=lambda batch_id, ids: list(range(20, 40)), max_new_tokens=6
    ),
    "prompt_lookup": dict(prompt_lookup_num_tokens=2, max_new_tokens=6),
    "assisted": dict(max_new_tokens=6),
}
BATCH_ONE = {"prompt_lookup", "assisted"}  # transformers' candidate decoding runs one prompt at a time


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("name", FAMILIES)
def test_a_fresh_ladder_model_generates_what_its_backbone_generates(name, strategy):
    backbone, model = pair(name)
    inputs = prompts(name, batch=1 if strategy in BATCH_ONE else 2)
    kw = dict(STRATEGIES[strategy])
    if strategy == "assisted":
        kw["assistant_model"] = _assistant(name)
    outs = []
    for m in (backbone, model):
        torch.manual_seed(0)
        with torch.no_grad():
            outs.append(m.generate(**inputs, **kw))
    assert torch.equal(outs[0], outs[1]), strategy
    rows = inputs["input_ids"].shape[0] * kw.get("num_return_sequences", 1)
    assert outs[1].shape[0] == rows


@pytest.mark.parametrize("name", FAMILIES)
def test_candidate_decoding_equals_greedy_when_the_side_network_matters(name):
    """Assisted and prompt-lookup decoding crop both caches back after rejected candidates: greedy is exact."""
    _, model = pair(name, side_matters=True)
    inputs = prompts(name, batch=1)
    greedy = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8)
    for extra in (dict(prompt_lookup_num_tokens=2), dict(assistant_model=_assistant(name))):
        assert torch.equal(model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, **extra), greedy), (
            extra
        )
    backbone_greedy = model.backbone.generate(**inputs, max_new_tokens=8, min_new_tokens=8)
    assert not torch.equal(greedy, backbone_greedy), "degenerate test: the side network changes nothing"


class _Collect(TextStreamer):
    def __init__(self, tokenizer):
        super().__init__(tokenizer, skip_prompt=True)
        self.text = ""

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text


@pytest.mark.parametrize("name", FAMILIES)
def test_the_streamer_streams_the_returned_tokens(name):
    _, model = pair(name, side_matters=True)
    tok = numbered_tokenizer()
    inputs = prompts(name, batch=1)
    streamer = _Collect(tok)
    out = model.generate(**inputs, max_new_tokens=7, min_new_tokens=7, streamer=streamer)
    start = inputs["input_ids"].shape[1] if head_of(name) == "causal_lm" else 1
    assert streamer.text.strip() == tok.decode(out[0, start:]).strip()
    assert len(streamer.text.split()) == 7


@pytest.mark.parametrize("name", ["llama", "t5"])
def test_stop_strings_end_generation_at_the_string(name):
    backbone, model = pair(name, side_matters=True)
    tok = numbered_tokenizer()
    inputs = prompts(name, batch=1)
    start = inputs["input_ids"].shape[1] if head_of(name) == "causal_lm" else 1
    free = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8)
    third = tok.convert_ids_to_tokens(int(free[0, start + 2]))
    stopped = model.generate(**inputs, max_new_tokens=8, stop_strings=[third], tokenizer=tok)
    first = [tok.convert_ids_to_tokens(int(i)) for i in free[0, start:]].index(third)
    assert torch.equal(stopped[0], free[0, : start + first + 1])


def test_a_generation_config_file_drives_generate_and_travels_with_the_side_network(tmp_path):
    _, model = pair("llama", side_matters=True)
    inputs = prompts("llama")
    GenerationConfig(max_new_tokens=3, min_new_tokens=3, num_beams=2).save_pretrained(tmp_path / "gen")
    from_file = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(tmp_path / "gen"))
    assert torch.equal(from_file, model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, num_beams=2))
    assert from_file.shape[1] == inputs["input_ids"].shape[1] + 3
    model.generation_config.max_new_tokens = 4  # the model's own defaults, saved with the side network
    model.save_pretrained(tmp_path / "side")
    loaded = LadderModel.from_pretrained(tiny("llama", "causal_lm"), tmp_path / "side").eval()
    assert loaded.generation_config.max_new_tokens == 4
    assert loaded.generate(**inputs).shape[1] == inputs["input_ids"].shape[1] + 4
    assert model.backbone.generation_config.max_new_tokens is None  # the backbone's own config is untouched
