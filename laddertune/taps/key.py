"""What a tap cache entry is keyed by, and the per-example key that finds one example's taps in it."""

from __future__ import annotations

import hashlib
import json

import torch

from ..core.fingerprint import legacy_fingerprint as weights_fingerprint  # exact: values, shapes and dtypes
from ..core.tap_projection import projection_fingerprint

TAP_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def tokenizer_hash(tokenizer) -> str:
    """A hash of everything that decides the tokenizer's ids: its serialised fast tokenizer, else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The serialised state also holds the padding and truncation of the LAST call (each call sets them), which
        # would make the hash depend on what ran before; the collator sets both on every call, the key records
        # max_length: drop them.
        state = json.loads(backend.to_str())
        state.pop("padding", None)
        state.pop("truncation", None)
        text = json.dumps(state, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([type(tokenizer).__name__, tokenizer.padding_side, tokenizer.truncation_side])
    return hashlib.sha256((text + extra).encode()).hexdigest()[:16]


def data_hash(examples: list[dict]) -> str:
    """A hash of the examples' content (texts and labels), in order."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.get("text"), e.get("text_pair"), e.get("label")], default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def cache_key(model, tokenizer, examples: list[dict], *, max_length: int, fmt: str, dtype: str) -> dict:
    """The fields an entry must match to be reused (its cached layers are matched separately: a superset serves)."""
    return {
        "backbone": weights_fingerprint(model),
        "tokenizer": tokenizer_hash(tokenizer),
        "data": data_hash(examples),
        "max_length": max_length,
        "format": fmt,
        "dtype": dtype,
        # the taps are stored projected (LadderConfig.tap_projection): an entry serves one projection only
        "projection": projection_fingerprint(model),
    }


def key_name(key: dict) -> str:
    """The entry's folder name: a hash of its key fields."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def example_key(batch: dict, i: int, seq2seq: bool = False) -> str:
    """Row ``i`` of a collated batch -> the hash of what decides its taps: its real tokens (and token types), and
    for T5 its target ids (teacher forcing makes the decoder's taps a function of them)."""
    h = hashlib.sha1()
    mask = batch["attention_mask"][i].bool()
    h.update(batch["input_ids"][i][mask].numpy().tobytes())
    if "token_type_ids" in batch:
        h.update(b"t" + batch["token_type_ids"][i][mask].numpy().tobytes())
    if seq2seq:
        h.update(b"d" + batch["labels"][i].numpy().tobytes())
    return h.hexdigest()
