"""Tokenising generative data: golden ids and loss masks per layout, truncation, batching, and SmolLM2's template.

Golden ids come from ``tests/tiny_tokenizers.py``: every word, space and mark is one token (``WORDS`` gives ids).
"""

from __future__ import annotations

import logging

import pytest
from tiny_tokenizers import tiny_tokenizer

from laddertune.data import GenerativeCollator, encode_causal, encode_seq2seq, normalize_rows
from laddertune.errors import ConfigError

X = -100
QUESTION = "What is the capital of France?"
# "What is the capital of France?" word by word
Q_IDS = [13, 9, 14, 9, 15, 9, 16, 9, 17, 9, 18, 10]
MULTI = [
    {"role": "system", "content": "Be nice."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Bye!"},
]
# <|im_start|>system\nBe nice.<|im_end|>\n  <|im_start|>user\nHi<|im_end|>\n  <|im_start|>assistant\nHello!<|im_end|>\n
# <|im_start|>user\nBye<|im_end|>\n  <|im_start|>assistant\nBye!<|im_end|>\n
MULTI_IDS = [
    2,
    7,
    8,
    23,
    9,
    24,
    11,
    1,
    8,
    2,
    5,
    8,
    20,
    1,
    8,
    2,
    6,
    8,
    21,
    12,
    1,
    8,
    2,
    5,
    8,
    22,
    1,
    8,
    2,
    6,
    8,
    22,
    12,
    1,
    8,
]
MULTI_LABELS = [X] * 18 + [21, 12, 1] + [X] * 10 + [22, 12, 1] + [X]


def _examples(*rows: dict, layout: str | None = None) -> list[dict]:
    return normalize_rows([(f"d.jsonl:{i + 1}", r) for i, r in enumerate(rows)], layout)[1]


def _qa(question: str = QUESTION, answer: str = "Paris") -> list[dict]:
    return _examples({"prompt": question, "completion": answer})


# ------------------------------------------------------------------------------------------- golden ids, masks


def test_prompt_completion_as_one_turn_chat():
    (row,), stats = encode_causal(_qa(), tiny_tokenizer(), max_length=64)
    prompt = [2, 5, 8, *Q_IDS, 1, 8, 2, 6, 8]  # user turn, then the generation prompt <|im_start|>assistant\n
    assert row["input_ids"] == [*prompt, 19, 1, 8]
    assert row["labels"] == [X] * len(prompt) + [
        19,
        1,
        X,
    ]  # Paris<|im_end|> learned, the newline after it not
    assert (
        row["prompt_length"] == len(prompt) and row["reference"] == "Paris" and row["location"] == "d.jsonl:1"
    )
    assert (stats.total, stats.kept, stats.cut, stats.dropped) == (1, 1, 0, 0)


def test_prompt_completion_plain_without_a_template():
    tok = tiny_tokenizer(chat=False)
    (auto,), _ = encode_causal(_qa(), tok, max_length=64)  # auto: no template -> plain
    (plain,), _ = encode_causal(_qa(), tiny_tokenizer(), max_length=64, prompt_format="plain")
    assert auto == plain
    assert plain["input_ids"] == [*Q_IDS, 8, 19, 1]  # prompt + "\n", completion + EOS
    assert plain["labels"] == [X] * 13 + [19, 1]
    assert plain["prompt_length"] == 13
    (spaced,), _ = encode_causal(_qa(), tok, max_length=64, separator=" ")
    assert spaced["input_ids"] == [*Q_IDS, 9, 19, 1]
    (bos,), _ = encode_causal(_qa(), tiny_tokenizer(chat=False, bos=True), max_length=64)
    assert bos["input_ids"] == [3, *Q_IDS, 8, 19, 1] and bos["labels"] == [X] * 14 + [19, 1]


def test_train_on_prompt_learns_every_token():
    (row,), _ = encode_causal(_qa(), tiny_tokenizer(chat=False), max_length=64, train_on_prompt=True)
    assert row["labels"] == row["input_ids"] == [*Q_IDS, 8, 19, 1]
    (chat,), _ = encode_causal(
        _examples({"messages": MULTI}), tiny_tokenizer(), max_length=64, train_on_prompt=True
    )
    assert chat["labels"] == MULTI_IDS


def test_alpaca_rendering():
    rows = _examples({"instruction": "Translate", "input": "cat", "output": "chat"})
    (row,), _ = encode_causal(rows, tiny_tokenizer(chat=False), max_length=64)
    assert row["input_ids"] == [25, 8, 8, 26, 8, 27, 1]  # "Translate\n\ncat" "\n" "chat" EOS
    assert row["labels"] == [X] * 5 + [27, 1]


def test_multi_turn_chat_learns_every_assistant_turn_only():
    (row,), _ = encode_causal(_examples({"messages": MULTI}), tiny_tokenizer(), max_length=64)
    assert row["input_ids"] == MULTI_IDS
    assert row["labels"] == MULTI_LABELS  # both replies + <|im_end|>; no system/user token, no newline after
    assert row["prompt_length"] == 31 and row["reference"] == "Bye!"


def test_sharegpt_conversation_and_explicit_template():
    share = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    tok = tiny_tokenizer(chat=False)
    with pytest.raises(ConfigError) as info:
        encode_causal(_examples({"conversations": share}), tok, max_length=64)
    assert "no chat template" in str(info.value) and "--chat-template" in str(info.value)
    assert "\n" not in str(info.value)
    template = "{% for m in messages %}{{ m['role'] + ':' + m['content'] + '<|im_end|>' }}{% endfor %}"
    (row,), _ = encode_causal(_examples({"conversations": share}), tok, max_length=64, chat_template=template)
    assert row["input_ids"] == [5, 29, 20, 1, 6, 29, 21, 12, 1]  # user:Hi<|im_end|>assistant:Hello!<|im_end|>
    # no generation prompt in this template: the assistant header is part of the learned span
    assert row["labels"] == [X] * 4 + [6, 29, 21, 12, 1]
    with pytest.raises(ConfigError, match="no chat template"):
        encode_causal(_qa(), tok, max_length=64, prompt_format="chat")


def test_template_that_breaks_the_prefix_property():
    # renders only the last two turns: an earlier rendering is not a prefix of the whole
    template = "{% for m in messages[-2:] %}{{ m['role'] + ':' + m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError) as info:
        encode_causal(_examples({"messages": MULTI}), tiny_tokenizer(), max_length=64, chat_template=template)
    assert str(info.value).startswith("d.jsonl:1: the chat template is not prefix-stable at turn")
    assert "\n" not in str(info.value)


def test_text_learns_every_token():
    (row,), _ = encode_causal(_examples({"text": "Hello Bye"}), tiny_tokenizer(), max_length=64)
    assert row["input_ids"] == row["labels"] == [21, 9, 22, 1] and row["prompt_length"] == 0
    with pytest.raises(ConfigError, match="text rows have no prompt"):
        encode_causal(_examples({"text": "Hello"}), tiny_tokenizer(), max_length=64, generation=True)


def test_seq2seq_rows():
    tok = tiny_tokenizer(chat=False, t5=True)
    rows = _qa() + _examples({"instruction": "Translate", "input": "cat", "output": "chat"})
    out, stats = encode_seq2seq(rows, tok, max_length=64, max_target_length=8)
    assert out[0]["input_ids"] == [*Q_IDS, 28] and out[0]["labels"] == [19, 28]
    assert out[1]["input_ids"] == [25, 8, 8, 26, 28] and out[1]["labels"] == [27, 28]
    cut, stats = encode_seq2seq(_qa(), tok, max_length=8, max_target_length=1)
    assert cut == [] and stats.dropped == 1  # the target "Paris</s>" does not fit in 1
    cut, stats = encode_seq2seq(_qa(), tok, max_length=8, max_target_length=2)
    assert (
        cut[0]["input_ids"] == [*Q_IDS[-7:], 28] and stats.cut == 1
    )  # the source's left end goes, </s> stays
    gen, _ = encode_seq2seq(_qa(), tok, max_length=64, max_target_length=2, generation=True)
    assert "labels" not in gen[0] and gen[0]["reference"] == "Paris"
    for row in ({"text": "Hi"}, {"messages": MULTI}):
        with pytest.raises(ConfigError, match="rows need a decoder-only backbone"):
            encode_seq2seq(_examples(row), tok, max_length=64, max_target_length=8)


# -------------------------------------------------------------------------------------------------- truncation


def test_prompt_is_cut_from_the_left_and_bos_kept(caplog):
    tok = tiny_tokenizer(chat=False, bos=True)
    long_answer = "Hello Hello Hello Hello Hello"  # 9 tokens + EOS, + <s>: 11
    rows = _examples(*({"prompt": QUESTION, "completion": a} for a in ("Paris", long_answer, "Bye")))
    with caplog.at_level(logging.WARNING, logger="laddertune.data.generative"):
        out, stats = encode_causal(rows, tok, max_length=10)
    # 16 tokens: <s> + 12 + "\n" + Paris + EOS -> <s>, then the prompt's last 7 tokens, then the answer
    assert out[0]["input_ids"] == [3, 16, 9, 17, 9, 18, 10, 8, 19, 1]
    assert out[0]["labels"] == [X] * 8 + [19, 1] and out[0]["prompt_length"] == 8
    assert [r["location"] for r in out] == ["d.jsonl:1", "d.jsonl:3"]  # the long answer cannot fit with <s>
    assert (stats.total, stats.kept, stats.cut, stats.dropped, stats.dropped_locations) == (
        3,
        2,
        2,
        1,
        ["d.jsonl:2"],
    )
    (record,) = caplog.records  # logged once
    assert "2 of 3 rows cut" in record.getMessage() and "1 dropped" in record.getMessage()


def test_multi_turn_chat_is_cut_from_the_left():
    (row,), stats = encode_causal(_examples({"messages": MULTI}), tiny_tokenizer(), max_length=20)
    # the unlearned newline at the end goes first, then 14 tokens from the left; the final reply stays whole
    assert row["input_ids"] == MULTI_IDS[14:34] and row["labels"] == MULTI_LABELS[14:34]
    assert row["prompt_length"] == 31 - 14 and stats.cut == 1
    (row,), _ = encode_causal(_examples({"messages": MULTI}), tiny_tokenizer(), max_length=8)
    assert row["input_ids"] == MULTI_IDS[26:34] and row["labels"] == [X] * 5 + [22, 12, 1]
    long_reply = [
        *MULTI[:4],
        {"role": "assistant", "content": "Hello Hello Hello Hello Hello"},
    ]  # 9 tokens + <|im_end|>
    out, stats = encode_causal(_examples({"messages": long_reply}), tiny_tokenizer(), max_length=8)
    assert out == [] and (stats.dropped, stats.dropped_locations) == (1, ["d.jsonl:1"])


def test_character_cap_before_tokenising():
    tok = tiny_tokenizer(chat=False)
    long_prompt = "Hi " * 40 + QUESTION  # 150 characters > 8 * 8
    out, stats = encode_causal(_qa(question=long_prompt), tok, max_length=8)
    assert out[0]["input_ids"][-3:] == [8, 19, 1] and len(out[0]["input_ids"]) == 8 and stats.cut == 1
    out, stats = encode_causal(_qa(answer="Hi " * 30), tok, max_length=8)  # 90 characters: cannot fit
    assert out == [] and stats.dropped == 1


def test_generation_mode_encodes_prompts():
    rows = _qa() + _examples({"messages": MULTI})
    out, _ = encode_causal(rows, tiny_tokenizer(), max_length=64, generation=True)
    assert out[0]["input_ids"] == [2, 5, 8, *Q_IDS, 1, 8, 2, 6, 8] and "labels" not in out[0]
    assert out[1]["input_ids"] == MULTI_IDS[:31] and out[1]["reference"] == "Bye!"
    open_chat = normalize_rows([("p:1", {"messages": MULTI[:2]})], require_answer=False)[1]
    (row,), _ = encode_causal(open_chat, tiny_tokenizer(), max_length=64, generation=True)
    assert row["input_ids"] == MULTI_IDS[:15] + [2, 6, 8] and row["reference"] == ""


# ----------------------------------------------------------------------------------------------------- batching


def test_collator_pads_right_for_training_and_left_for_generation():
    tok = tiny_tokenizer(chat=False)
    rows, _ = encode_causal(_qa() + _qa(question="Hi", answer="Hello"), tok, max_length=64)
    batch = GenerativeCollator(tok.pad_token_id)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"][1].tolist() == [20, 8, 21, 1] + [0] * 11
    assert batch["attention_mask"][1].tolist() == [1] * 4 + [0] * 11
    assert batch["labels"][1].tolist() == [X, X, 21, 1] + [X] * 11
    gen, refs = GenerativeCollator(tok.pad_token_id, generation=True, pad_to_multiple_of=8)(rows)
    assert gen["input_ids"].shape == (2, 16) and refs == ["Paris", "Hello"]
    assert gen["input_ids"][1].tolist() == [0] * 14 + [20, 8]
    assert gen["attention_mask"][1].tolist() == [0] * 14 + [1, 1]


def test_collator_for_seq2seq_pads_targets_apart():
    tok = tiny_tokenizer(chat=False, t5=True)
    rows, _ = encode_seq2seq(
        _qa() + _qa(question="Hi", answer="Hello Bye"), tok, max_length=64, max_target_length=8
    )
    batch = GenerativeCollator(tok.pad_token_id, seq2seq=True)(rows)
    assert batch["input_ids"].shape == (2, 13) and batch["labels"].tolist() == [
        [19, 28, X, X],
        [21, 9, 22, 28],
    ]
    gen, refs = GenerativeCollator(tok.pad_token_id, generation=True, seq2seq=True)(rows)
    assert gen["input_ids"][1].tolist() == [20, 28] + [0] * 11 and refs == ["Paris", "Hello Bye"]


def test_collator_refuses_a_tokenizer_without_pad():
    with pytest.raises(ConfigError, match="no pad token"):
        GenerativeCollator(None)


# ------------------------------------------------------------------------------------------------ real SmolLM2


@pytest.fixture(scope="module")
def smollm2():
    from laddertune.core.backbones import load_tokenizer

    return load_tokenizer("smollm2")


@pytest.mark.real
def test_smollm2_multi_turn_masks(smollm2):
    (row,), _ = encode_causal(_examples({"messages": MULTI}), smollm2, max_length=128)
    learned = [i for i, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != X]
    assert smollm2.decode(learned) == "Hello!<|im_end|>Bye!<|im_end|>"
    assert smollm2.decode(row["input_ids"][: row["prompt_length"]]).endswith(
        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    )
    im_end = smollm2.convert_tokens_to_ids("<|im_end|>")
    assert row["labels"].count(im_end) == 2 and row["input_ids"].count(im_end) == 5


@pytest.mark.real
def test_smollm2_prompt_completion_both_formats(smollm2):
    (chat,), _ = encode_causal(_qa(), smollm2, max_length=128)
    assert smollm2.decode(chat["input_ids"]).endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis<|im_end|>\n"
    )
    assert smollm2.decode([t for t in chat["labels"] if t != X]) == "Paris<|im_end|>"
    (plain,), _ = encode_causal(_qa(), smollm2, max_length=128, prompt_format="plain")
    assert smollm2.decode(plain["input_ids"]) == "What is the capital of France?\nParis<|im_end|>"
    assert smollm2.decode([t for t in plain["labels"] if t != X]) == "Paris<|im_end|>"
    # the generation prompt is the same ids as the training row's prompt
    (gen,), _ = encode_causal(_qa(), smollm2, max_length=128, generation=True)
    assert gen["input_ids"] == chat["input_ids"][: chat["prompt_length"]]
