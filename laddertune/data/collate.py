"""Batching: tokenise examples in one of three formats and pad each batch to its longest sequence.

Examples are the plain dicts of :mod:`laddertune.data`. Evaluation batches are sorted by length to cut padding,
and :func:`restore_order` maps predictions back to the original order.

Memory is bounded by ``max_length``, not by the longest row: each text field is cut to ``max_length *``
:data:`CHARS_PER_TOKEN` characters before it is tokenized (a fast tokenizer holds offsets and ids for every token
of what it is given, about 150 bytes a character: a 40 MB row took 6 GB). The cut changes nothing whenever the
first ``max_length`` tokens of a field lie within its first ``8 * max_length`` characters, which holds for text
(WordPiece, BPE and SentencePiece tokens average 3-5 characters; a token longer than 8 characters on average over
a whole window would need runs of whitespace or of one repeated piece); a text that breaks it is cut earlier than
``max_length`` tokens, never longer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .tasks import TaskSpec

FORMATS = ("classification", "text2text", "causal")
CHARS_PER_TOKEN = 8  # characters kept per token of max_length in each text field, before tokenizing

__all__ = [
    "CHARS_PER_TOKEN",
    "FORMATS",
    "Collator",
    "eval_batches",
    "make_collator",
    "restore_order",
    "sort_for_eval",
]


@dataclass
class Collator:
    """Turns a list of examples into a batch of tensors, padded to the longest sequence in the batch.

    Formats (the collator works with any tokenizer family):

    - ``classification``: ``tokenizer(text, text_pair)`` -> ``input_ids``, ``attention_mask`` (and
      ``token_type_ids`` when the tokenizer makes them), ``labels`` (long; float for regression).
    - ``text2text`` (T5): source ``"<task> key1: text1 key2: text2"``, ``labels`` = the target's ids
      (:meth:`TaskSpec.format_target`) with padding set to -100. Right padding.
    - ``causal`` (decoder-only LM): ``prompt = source + " label:"``, ``input_ids = prompt + " " + target + eos``,
      ``labels`` -100 on the prompt and the padding, so only the answer is learned. Right padding. A prompt
      longer than ``max_length`` loses tokens just before ``" label:"``, which is always kept. With
      ``generation=True`` the batch holds the prompts alone, left-padded, ready for ``generate``.

    Attributes:
        tokenizer (Any): a Hugging Face tokenizer.
        fmt (str): ``classification``, ``text2text`` or ``causal``.
        spec (TaskSpec): the task.
        max_length (int): longest source (causal: prompt + answer), in tokens.
        max_target_length (int): longest text-to-text target, in tokens.
        generation (bool): causal only: prompts without answers, left-padded.
    """

    tokenizer: Any
    fmt: str
    spec: TaskSpec
    max_length: int = 128
    max_target_length: int = 16
    generation: bool = False

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"unknown data format {self.fmt!r}; choose one of {', '.join(FORMATS)}")
        if self.max_length < 8 or self.max_target_length < 1:
            raise ConfigError(f"max_length must be >= 8 and max_target_length >= 1, got {self.max_length}")
        tok = self.tokenizer
        self._eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else (self._eos or 0)
        # tokens to keep at the end of a cut causal prompt: " label:" and any special tokens appended after it
        plain = tok("x label:", add_special_tokens=False)["input_ids"]
        full = tok("x label:")["input_ids"]
        lead = next((i for i in range(len(full)) if full[i : i + len(plain)] == plain), 0)
        suffix = tok(" label:", add_special_tokens=False)["input_ids"]
        self._tail = len(suffix) + max(0, len(full) - lead - len(plain))

    @property
    def max_chars(self) -> int:
        """Characters kept of each text field: ``max_length * CHARS_PER_TOKEN`` (see the module docstring)."""
        return self.max_length * CHARS_PER_TOKEN

    def _clip(self, example: dict) -> dict:
        """``example`` with its text fields cut to :attr:`max_chars` characters (the same dict when short)."""
        n = self.max_chars
        text, pair = example["text"], example.get("text_pair")
        if len(text) <= n and (pair is None or len(pair) <= n):
            return example
        return {**example, "text": text[:n], "text_pair": pair[:n] if pair is not None else None}

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        examples = [self._clip(e) for e in examples]
        if self.fmt == "classification":
            return self._classification(examples)
        if self.fmt == "text2text":
            return self._text2text(examples)
        return self._causal(examples)

    def _classification(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        texts = [e["text"] for e in examples]
        pairs = [e.get("text_pair") or "" for e in examples] if self.spec.has_pair else None
        enc = self.tokenizer(
            texts, pairs, truncation=True, max_length=self.max_length, padding="longest", return_tensors="pt"
        )
        batch = dict(enc)
        dtype = torch.float32 if self.spec.is_regression else torch.long
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=dtype)
        return batch

    def _text2text(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        kw = {"truncation": True, "padding": "longest", "padding_side": "right", "return_tensors": "pt"}
        src = self.tokenizer([self.spec.format_source(e) for e in examples], max_length=self.max_length, **kw)
        tgt = self.tokenizer(
            [self.spec.format_target(e["label"]) for e in examples], max_length=self.max_target_length, **kw
        )
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)  # (B, T_tgt)
        return {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"], "labels": labels}

    def _causal(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        tok, seqs, labs = self.tokenizer, [], []
        for e in examples:
            prompt = tok(self.spec.format_source(e) + " label:")["input_ids"]
            answer = (
                []
                if self.generation
                else tok(" " + self.spec.format_target(e["label"]), add_special_tokens=False)["input_ids"]
            )
            if answer and self._eos is not None:
                answer = answer + [self._eos]
            budget = self.max_length - len(answer)
            if len(prompt) > budget:  # cut the middle, keep the head and " label:"
                keep = max(0, budget - self._tail)
                prompt = prompt[:keep] + prompt[len(prompt) - (budget - keep) :]
            seqs.append(prompt + answer)
            labs.append([-100] * len(prompt) + answer)
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self._pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labs, strict=True)):
            span = slice(width - len(s), width) if self.generation else slice(0, len(s))
            ids[i, span], mask[i, span], labels[i, span] = torch.tensor(s), 1, torch.tensor(lab)
        if self.generation:
            return {"input_ids": ids, "attention_mask": mask}
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def make_collator(
    tokenizer: Any,
    *,
    fmt: str,
    spec: TaskSpec,
    max_length: int = 128,
    max_target_length: int = 16,
    generation: bool = False,
) -> Collator:
    """Build the batch function for a format; see :class:`Collator`.

    Raises:
        ConfigError: unknown format or too small lengths.
    """
    return Collator(tokenizer, fmt, spec, max_length, max_target_length, generation)


def sort_for_eval(
    examples: list[dict], tokenizer: Any = None, max_chars: int | None = None
) -> tuple[list[dict], list[int]]:
    """Sort examples by length, longest first, so evaluation batches hold similar lengths and pad little.

    Args:
        examples (list[dict]): the examples.
        tokenizer (Any): measures length in tokens; without one, in characters.
        max_chars (int | None): measure only this many characters of each text (the collator's cut).

    Returns:
        tuple[list[dict], list[int]]: the sorted examples and ``order``, where ``sorted[k] = examples[order[k]]``;
        :func:`restore_order` maps per-example results back.
    """
    texts = [e["text"][:max_chars] for e in examples]
    pairs = [(e.get("text_pair") or "")[:max_chars] for e in examples]
    if tokenizer is None or not examples:
        lengths = [len(t) + len(p) for t, p in zip(texts, pairs, strict=True)]
    else:
        lengths = [len(ids) for ids in tokenizer(texts, pairs)["input_ids"]]
    order = sorted(range(len(examples)), key=lambda i: (-lengths[i], i))
    return [examples[i] for i in order], order


def restore_order(values: list, order: list[int]) -> list:
    """Undo :func:`sort_for_eval`: ``values[k]`` belongs to example ``order[k]``."""
    if len(values) != len(order):
        raise ValueError(f"{len(values)} values for {len(order)} examples")
    out = [None] * len(order)
    for k, i in enumerate(order):
        out[i] = values[k]
    return out


def eval_batches(
    examples: list[dict], collator: Collator, batch_size: int, *, sort: bool = True
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield ``(indices, batch)`` for evaluation; ``indices`` are the batch's positions in ``examples``.

    With ``sort`` the batches go longest first (bucketed by length, see :func:`sort_for_eval`).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = (
        sort_for_eval(examples, collator.tokenizer, collator.max_chars)[1]
        if sort
        else list(range(len(examples)))
    )
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, collator([examples[i] for i in idx])
