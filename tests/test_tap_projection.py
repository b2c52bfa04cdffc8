"""Projected taps (``LadderConfig.tap_projection``): Down_i = A_i P_i with P_i frozen and applied while the backbone
runs. With P the identity it is the paper's full-width Down exactly; the kept taps are k wide; PCA finds the
principal directions; the projection travels with checkpoints; multi-side inference projects per side."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import LadderConfig, LadderModel, MultiSideModel, get_ladder_model
from laddertune.core.side_network import EMBED
from laddertune.core.tap_projection import FINAL, random_basis
from laddertune.core.taps import collect_taps
from laddertune.errors import ConfigError

CASES = [("bert", "sequence_classification"), ("llama", "causal_lm"), ("t5", "seq2seq_lm")]


@pytest.mark.parametrize(("family", "head"), CASES)
def test_identity_projection_equals_full_width_down(family, head):
    """P = identity (k = d) and A_i = the full-width model's Down_i: the same logits, loss and gradients."""
    full = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4, tap_projection="none")
    )
    proj = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4, tap_projection="random", tap_rank=32)
    )
    with torch.no_grad():
        for stack in proj.side.stacks.values():
            stack.projection.basis.copy_(torch.eye(32)[None])
        state = full.side.state_dict()
        missing, unexpected = proj.side.load_state_dict(state, strict=False)
        assert unexpected == [] and all(k.endswith("projection.basis") for k in missing)
    full.eval(), proj.eval()
    batch = tiny_batch(family, head)
    a, b = full(**batch), proj(**batch)
    torch.testing.assert_close(b.loss, a.loss)
    a.loss.backward(), b.loss.backward()
    grads = dict(full.side.named_parameters())
    for name, p in proj.side.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)


@pytest.mark.parametrize(("family", "head"), CASES)
def test_kept_taps_are_k_wide_and_the_final_state_full_width(family, head):
    config = LadderConfig(reduction_factor=4, tap_projection="random")  # k = 8
    model = get_ladder_model(tiny_backbone(family, head), config)
    batch = tiny_batch(family, head)
    taps = collect_taps(model, **batch)
    reader = "decoder" if head == "seq2seq_lm" else "body"
    for name, stack_taps in taps.items():
        for key, tap in stack_taps.items():
            assert tap.shape[-1] == (32 if key == FINAL else 8), (name, key)
        assert (FINAL in stack_taps) == (name == reader)
    model.eval()
    with torch.no_grad():  # the cached path (taps given) equals the live one
        torch.testing.assert_close(model(**batch, taps=taps).logits, model(**batch).logits)


def test_projection_is_applied_inside_the_backbone_forward():
    """The side keeps P b_i, never b_i: the recorded tap is the projection of the layer's output."""
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"),
        LadderConfig(reduction_factor=4, tap_projection="random"),
    )
    outputs = []
    model.backbone.bert.encoder.layer[1].register_forward_hook(
        lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o)
    )
    taps = collect_taps(model, **tiny_batch("bert", "sequence_classification"))["body"]
    basis = random_basis(8, 32)
    torch.testing.assert_close(taps[1], outputs[0] @ basis.T)
    torch.testing.assert_close(basis @ basis.T, torch.eye(8))  # orthonormal rows


def test_pca_finds_the_principal_directions_and_needs_data():
    backbone = tiny_backbone("bert", "sequence_classification")
    with pytest.raises(ConfigError, match="calibration_data"):
        get_ladder_model(backbone, LadderConfig(reduction_factor=4, tap_projection="pca"))
    data = [tiny_batch("bert", "sequence_classification", seed=s, batch=4, length=12) for s in range(3)]
    config = LadderConfig(reduction_factor=4, tap_projection="pca")
    model = get_ladder_model(backbone, config, calibration_data=data)
    proj = model.side.stacks["body"].projection
    raw = [
        model.backbone_taps(**{k: v for k, v in b.items() if k != "labels"}, raw=True)["body"] for b in data
    ]
    for key, i in proj.index.items():
        x = torch.cat([r[key][b["attention_mask"].bool()] for r, b in zip(raw, data, strict=True)]).double()
        cov = torch.cov(x.T, correction=0)
        values, vectors = torch.linalg.eigh(cov)
        p = proj.basis[i].double()  # (k, d)
        torch.testing.assert_close(p @ p.T, torch.eye(8, dtype=torch.double), atol=1e-5, rtol=0)
        # the captured variance is the top-k eigenvalues' sum, and it spans the top-k eigenvectors
        torch.testing.assert_close(torch.trace(p @ cov @ p.T), values[-8:].sum(), rtol=1e-4, atol=1e-6)
        top = vectors[:, -8:]
        torch.testing.assert_close(top.T @ p.T @ p @ top, torch.eye(8, dtype=torch.double), atol=1e-4, rtol=0)


def test_fitted_projection_travels_with_the_checkpoint(tmp_path):
    data = [tiny_batch("llama", "causal_lm", seed=s, batch=4, length=10) for s in range(2)]
    model = get_ladder_model(
        tiny_backbone("llama", "causal_lm"), LadderConfig(reduction_factor=4), calibration_data=data
    )
    model.save_pretrained(tmp_path)
    reloaded = LadderModel.from_pretrained(tiny_backbone("llama", "causal_lm"), tmp_path)
    assert reloaded.ladder_config.tap_projection == "pca"
    torch.testing.assert_close(
        reloaded.side.stacks["body"].projection.basis, model.side.stacks["body"].projection.basis
    )
    model.eval(), reloaded.eval()
    batch = tiny_batch("llama", "causal_lm")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)


def test_old_configs_load_as_full_width_taps_and_backbone_heads():
    old = {"reduction_factor": 4, "side_attention_heads": None, "loss_chunk_size": None}
    config = LadderConfig.from_dict(old)  # a file written before tap_projection existed
    assert (
        config.tap_projection == "none" and config.side_attention_heads == 0 and config.loss_chunk_size == 0
    )
    model = get_ladder_model(tiny_backbone("bert", "sequence_classification"), config)
    stack = model.side.stacks["body"]
    assert stack.projection is None and stack.downs[0].in_features == 32
    assert stack.trunk_config.num_attention_heads == 4


def test_multi_side_projects_for_each_side():
    backbone = tiny_backbone("llama", "causal_lm")
    multi = MultiSideModel(backbone)
    data = [tiny_batch("llama", "causal_lm", seed=3)]
    multi._put("pca", get_ladder_model(backbone, LadderConfig(reduction_factor=4), calibration_data=data))
    multi.add_side("random", LadderConfig(reduction_factor=4, tap_projection="random"))
    multi.add_side("full", LadderConfig(reduction_factor=4, tap_projection="none"))
    batch = tiny_batch("llama", "causal_lm")
    with torch.no_grad():
        together = multi.forward_all(**batch)
        for name, model in multi.sides.items():
            torch.testing.assert_close(together[name].logits, model(**batch).logits)


@pytest.mark.parametrize(("family", "head"), CASES)
def test_default_projects_the_taps_of_lm_heads_only(family, head):
    """LM heads: pca with calibration data, full width without it (nothing to fit a projection on); classifiers:
    full width (a projection measurably costs them accuracy)."""
    model = get_ladder_model(tiny_backbone(family, head), LadderConfig(reduction_factor=4))
    lm = head != "sequence_classification"
    assert model.ladder_config.tap_projection == "none"
    assert model.side.stacks[next(iter(model.side.stacks))].projection is None
    data = [tiny_batch(family, head, seed=3)]
    model = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4), calibration_data=data
    )
    assert model.ladder_config.tap_projection == ("pca" if lm else "none")


def test_embedding_tap_is_projected_too():
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"),
        LadderConfig(reduction_factor=4, tap_projection="random"),
    )
    taps = collect_taps(model, **tiny_batch("bert", "sequence_classification"))["body"]
    assert taps[EMBED].shape[-1] == 8 and model.side.stacks["body"].embed_down.in_features == 8
