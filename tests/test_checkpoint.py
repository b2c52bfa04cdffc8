"""Side-only checkpoints: round trip, nothing of the backbone written, refusal of another backbone."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CASES, tiny_backbone, tiny_batch
from safetensors.torch import load_file

from laddertune import CheckpointError, LadderConfig, LadderModel, get_ladder_model


def _trained(family, head, seed=0):
    model = get_ladder_model(
        tiny_backbone(family, head, seed=seed), LadderConfig(reduction_factor=4, side_layers=[0, 2])
    )
    optimizer = torch.optim.AdamW(model.side.parameters(), lr=1e-2)
    model(**tiny_batch(family, head)).loss.backward()
    optimizer.step()
    return model.eval()


@pytest.mark.parametrize(("family", "head"), CASES)
def test_round_trip_gives_identical_logits_on_a_fresh_backbone(tmp_path, family, head):
    model = _trained(family, head)
    batch = tiny_batch(family, head)
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    files = ["ladder_config.json", "ladder_model.safetensors", "model.safetensors.index.json"]
    if head != "sequence_classification":  # an LM head's generation defaults, as transformers saves them
        files.insert(0, "generation_config.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    restored = LadderModel.from_pretrained(tiny_backbone(family, head, seed=0), tmp_path).eval()
    torch.testing.assert_close(restored(**batch).logits, expected, rtol=0, atol=0)


def test_saved_folder_holds_no_backbone_weight(tmp_path):
    model = _trained("t5", "seq2seq_lm")
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "ladder_model.safetensors"))
    assert saved.keys() == model.side.state_dict().keys()
    backbone_names = set(model.backbone.state_dict())
    assert not backbone_names & set(saved)
    saved_count = sum(t.numel() for t in saved.values())
    # the trainable side, and a frozen tap projection's basis where there is one (none by default without
    # calibration data; tests/test_tap_projection.py saves and reloads one)
    basis = sum(s.projection.basis.numel() for s in model.side.stacks.values() if s.projection is not None)
    assert saved_count == model.trainable_parameters()[0] + basis
    # no side matrix has the shape of a backbone matrix (ladders map d -> d/r; T5's relative-bias table is
    # buckets x heads and heads are not reduced, so it is the one legitimate exception)
    backbone_shapes = {tuple(t.shape) for t in model.backbone.state_dict().values() if t.dim() == 2}
    side_shapes = {
        tuple(t.shape)
        for k, t in saved.items()
        if "down" not in k and k != "up.weight" and "relative_attention" not in k
    }
    assert not side_shapes & backbone_shapes
    config = json.loads((tmp_path / "ladder_config.json").read_text())
    assert config["backbone_fingerprint"] and config["task_head"] == "seq2seq_lm"


def test_loading_onto_a_different_backbone_fails_clearly(tmp_path):
    _trained("bert", "sequence_classification", seed=0).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="was trained on backbone .*fingerprint"):
        LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification", seed=1), tmp_path)


def test_fingerprint_ignores_the_new_task_head(tmp_path):
    """A fresh backbone from the same pretrained weights has a new random classifier: it must still load."""
    _trained("bert", "sequence_classification").save_pretrained(tmp_path)
    fresh = tiny_backbone("bert", "sequence_classification", seed=0)
    torch.nn.init.normal_(fresh.classifier.weight)
    LadderModel.from_pretrained(fresh, tmp_path)


def test_corrupt_or_truncated_weights_are_detected(tmp_path):
    _trained("bert", "sequence_classification").save_pretrained(tmp_path)
    weights = tmp_path / "ladder_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification"), tmp_path)


def test_missing_folder_or_config_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification"), tmp_path / "nope")
    with pytest.raises(CheckpointError, match="ladder_config.json"):
        LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification"), tmp_path)
