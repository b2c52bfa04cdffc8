"""Many side networks on one backbone: one backbone pass gives each side network's own outputs; foreign refused."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import LadderConfig, MultiSideModel, get_ladder_model
from laddertune.errors import CheckpointError, ConfigError

CASES = [("bert", "sequence_classification"), ("llama", "causal_lm"), ("t5", "seq2seq_lm")]
SIDES = {
    "a": LadderConfig(reduction_factor=4),
    "b": LadderConfig(reduction_factor=8, side_layers=[1]),
    "c": LadderConfig(reduction_factor=4, side_layers=[0, 2], gate_init=1.0),
}


@pytest.mark.parametrize(("family", "head"), CASES)
def test_forward_all_equals_each_side_alone(family, head):
    backbone = tiny_backbone(family, head)
    multi = MultiSideModel(backbone)
    for name, cfg in SIDES.items():
        torch.manual_seed(len(name) + ord(name))
        multi.add_side(name, cfg)
        with torch.no_grad():  # as after training (the final shortcut starts Up at zero)
            multi.sides[name].side.up.weight.normal_(std=0.1)
    batch = tiny_batch(family, head)
    together = multi.forward_all(**batch)
    calls = {"n": 0}
    hook = backbone.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    for name in SIDES:
        multi.set_side(name)
        with torch.no_grad():
            alone = multi(**batch)
        assert torch.equal(together[name].logits, alone.logits), name
        assert torch.equal(together[name].loss, alone.loss), name
    hook.remove()
    # the sides differ from each other (the test could not pass with one side's outputs copied)
    assert not torch.equal(together["a"].logits, together["b"].logits)


def test_load_side_and_foreign_backbone_refused(tmp_path):
    backbone = tiny_backbone("bert", "sequence_classification", seed=0)
    trained = get_ladder_model(backbone, LadderConfig(reduction_factor=4))
    trained.save_pretrained(tmp_path / "a")
    multi = MultiSideModel(tiny_backbone("bert", "sequence_classification", seed=0))
    multi.load_side("a", tmp_path / "a")
    batch = tiny_batch("bert", "sequence_classification")
    trained.eval()
    with torch.no_grad():
        assert torch.equal(multi.forward_all(**batch)["a"].logits, trained(**batch).logits)
    foreign = MultiSideModel(tiny_backbone("bert", "sequence_classification", seed=1))
    with pytest.raises(CheckpointError, match="fingerprint"):
        foreign.load_side("a", tmp_path / "a")
    with pytest.raises(ConfigError, match="already loaded"):
        multi.load_side("a", tmp_path / "a")
    with pytest.raises(ConfigError, match="no side network named"):
        multi.set_side("zzz")
