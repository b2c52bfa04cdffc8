"""Shared test fixtures: tiny random backbones built from configs (no downloads), and the offline data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import transformers as T

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# The reliability tests' yardstick run and its fixtures (assets, reference, interrupted), shared by their files.
pytest_plugins = ["reliability_setup"]

VOCAB = 64


def tiny_backbone(family: str, head: str, *, seed: int = 0, num_labels: int = 2):
    """A tiny random backbone of ``family`` (t5, bert, llama, gpt2) with ``head``, deterministic for ``seed``."""
    torch.manual_seed(seed)
    if family == "t5":
        cfg = T.T5Config(
            vocab_size=VOCAB,
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_heads=4,
            num_layers=3,
            num_decoder_layers=3,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
        return T.T5ForConditionalGeneration(cfg)
    common = dict(vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=2, num_labels=num_labels)
    if family == "bert":
        cfg = T.BertConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, **common
        )
        assert head == "sequence_classification"
        return T.BertForSequenceClassification(cfg)
    if family == "llama":
        cfg = T.LlamaConfig(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            **common,
        )
        return (T.LlamaForCausalLM if head == "causal_lm" else T.LlamaForSequenceClassification)(cfg)
    if family == "gpt2":
        cfg = T.GPT2Config(n_embd=32, n_layer=3, n_head=4, **common)
        return (T.GPT2LMHeadModel if head == "causal_lm" else T.GPT2ForSequenceClassification)(cfg)
    raise ValueError(family)


def tiny_batch(
    family: str, head: str, *, batch: int = 3, length: int = 7, seed: int = 1, num_labels: int = 2
):
    """A padded batch for ``tiny_backbone(family, head)``: right padding, labels for the head."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 2 :] = 0
    ids = ids.masked_fill(mask == 0, 0)
    out = {"input_ids": ids, "attention_mask": mask}
    if head == "seq2seq_lm":
        out["labels"] = torch.randint(2, VOCAB, (batch, 4), generator=g)
    elif head == "causal_lm":
        out["labels"] = ids.masked_fill(mask == 0, -100)
    elif num_labels == 1:
        out["labels"] = torch.rand(batch, generator=g)
    else:
        out["labels"] = torch.randint(0, num_labels, (batch,), generator=g)
    return out


# (family, head) pairs the core supports and tests
CASES = [
    ("t5", "seq2seq_lm"),
    ("bert", "sequence_classification"),
    ("llama", "causal_lm"),
    ("llama", "sequence_classification"),
    ("gpt2", "causal_lm"),
    ("gpt2", "sequence_classification"),
]


def glue_dir() -> Path | None:
    """The offline GLUE folder: $LADDERTUNE_DATA_DIR, or ../shared/data/glue beside the checkout."""
    candidates = [
        os.environ.get("LADDERTUNE_DATA_DIR"),
        Path(__file__).resolve().parents[2] / "shared/data/glue",
    ]
    for c in candidates:
        if c and (Path(c) / "rte" / "train.jsonl").is_file():
            return Path(c)
    return None


@pytest.fixture
def glue_path() -> Path:
    path = glue_dir()
    if path is None:
        pytest.skip("GLUE data folder not found: set LADDERTUNE_DATA_DIR or place ../shared/data/glue")
    return path


def predicted_and_real_peak(
    config, method: str, head: str, shape: dict, *, precision=None, steps=1, **options
):
    """(``predict_memory``'s prediction, the measured peak bytes) of a training step on CPU: the trace of ``config``
    against the same model built for real, one warm-up step (the AdamW state), then ``steps`` measured steps."""
    import warnings

    from laddertune.memory import PeakMemoryMeter
    from laddertune.memory.predict import (
        build_training_model,
        make_batch,
        make_optimizer,
        predict_memory,
        training_step,
    )

    extra = {} if precision is None else {"precision": precision}
    predicted = predict_memory(config, method, device_semantics="cpu", **shape, **extra, **options)
    autocast = torch.bfloat16 if precision == "bf16" else None
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_training_model(config, method, head, **options)
    optimizer, batch = make_optimizer(model, "cpu"), make_batch(config, head, *shape.values())
    training_step(model, batch, optimizer, autocast_dtype=autocast)
    meter = PeakMemoryMeter(model, optimizer, batch, device="cpu")
    with meter.phase("train"):
        for _ in range(steps):
            training_step(model, batch, optimizer, autocast_dtype=autocast)
    return predicted, meter.report().peak("train")
