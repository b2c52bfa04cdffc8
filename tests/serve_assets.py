"""Tiny checkpoints for the server's tests, written in seconds (no training, no downloads).

A tiny Llama with the word-level ChatML tokenizer of tiny_tokenizers.py is saved as a backbone folder; each side
network is an LST side network on it whose weights are moved off their initial values by a seeded perturbation, so
that every side network answers differently (a fresh one would answer exactly as the backbone: its up-projection
starts at zero), saved as a run's checkpoint folder would be: the side network, task.json and SHA256SUMS.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers as T
from tiny_tokenizers import WORDS, tiny_tokenizer

from laddertune import LadderConfig, get_ladder_model, load_backbone
from laddertune.data.generative_task import GenerativeTask
from laddertune.data.tasks import TaskSpec, spec_to_dict
from laddertune.io import write_checksums

LABELS = ("negative", "neutral", "positive")


def backbone_folder(root: Path, *, seed: int = 0) -> str:
    """A tiny Llama (2 layers, width 32, 64 positions) and its tokenizer, saved in ``root / "llama"``."""
    folder = root / "llama"
    config = T.LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=3,
    )  # fmt: skip
    torch.manual_seed(seed)
    T.LlamaForCausalLM(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def perturb(model, seed: int, scale: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.side.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def lm_checkpoint(
    root: Path,
    backbone: str,
    name: str,
    seed: int,
    *,
    max_new_tokens: int = 6,
    reentry_layers: int = 0,
    **task,
) -> Path:
    """A generative (causal LM) checkpoint ``root / name / "checkpoint-best"`` of prompt/completion rows."""
    config = LadderConfig(reduction_factor=4, reentry_layers=reentry_layers)
    model = get_ladder_model(load_backbone(backbone, "causal_lm"), config)
    perturb(model, seed)
    generative = GenerativeTask(layout=task.pop("layout", "prompt_completion"), name=name, **task)
    record = {
        "version": 1, "task": name, "format": generative.layout, "max_length": 48, "backbone": backbone,
        "method": "lst", "head": "causal_lm", "generative": generative.to_dict(),
        "generation": {"eval_generate": False, "max_new_tokens": max_new_tokens, "num_beams": 1,
                       "do_sample": False, "temperature": 1.0, "top_p": 1.0},
    }  # fmt: skip
    return _save(root / name, model, record)


def classifier_checkpoint(root: Path, backbone: str, name: str, seed: int, *, pair: bool = False) -> Path:
    """A three-class classification checkpoint (``LABELS``) on the same backbone's base model."""
    spec = TaskSpec(name, ("text", "text_pair") if pair else ("text",), num_labels=3, label_names=LABELS)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
    backbone_model = load_backbone(backbone, "sequence_classification", num_labels=3, **labels)
    model = get_ladder_model(backbone_model, LadderConfig(reduction_factor=4))
    perturb(model, seed)
    record = {
        "version": 1, "task": name, "format": "classification", "max_length": 32, "backbone": backbone,
        "method": "lst", "spec": spec_to_dict(spec),
    }  # fmt: skip
    return _save(root / name, model, record)


def _save(run: Path, model, record: dict) -> Path:
    folder = run / "checkpoint-best"
    model.save_pretrained(folder)
    (folder / "task.json").write_text(json.dumps(record))
    write_checksums(folder)
    return folder
