"""A plain ``transformers.Trainer`` on a LadderModel: side-only checkpoints, periodic and final, a resume that
continues the same run, the best model loaded back; ``LadderTrainer`` also resumes from laddertune 0.1's folders."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import VOCAB, tiny_backbone
from transformers import Trainer, TrainerCallback, TrainingArguments

from laddertune import LadderConfig, LadderModel, get_ladder_model
from laddertune.core.side_checkpoint import INDEX_NAME, WEIGHTS_NAME
from laddertune.io import load_tensors
from laddertune.training.hf_trainer import LadderTrainer

STEPS = 6
# TrainingArguments' switch: transformers 5.23 added activation_checkpointing (Trainer then calls
# model.activation_checkpointing_enable); before it, gradient_checkpointing (model.gradient_checkpointing_enable,
# which LadderModel aliases)
CHECKPOINTING = (
    "activation_checkpointing"
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    else "gradient_checkpointing"
)


def _dataset(n: int = 24, length: int = 6):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (n, length), generator=g)
    labels = (ids[:, 0] > VOCAB // 2).long()  # learnable from the first token
    return [
        {"input_ids": i, "attention_mask": torch.ones_like(i), "labels": y}
        for i, y in zip(ids, labels, strict=True)
    ]


def _model():
    torch.manual_seed(0)
    # the backbone's heads: the eval losses test_load_best_model_at_end... was written for
    config = LadderConfig(reduction_factor=4, side_attention_heads=0)
    return get_ladder_model(tiny_backbone("bert", "sequence_classification"), config)


class _ElsewhereTrainer(Trainer):
    """A Trainer subclass written elsewhere (as TRL's are): it knows nothing of laddertune."""

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)


def _trainer(out, model, training_args: dict | None = None, cls=Trainer, **kw):
    args = TrainingArguments(
        **(training_args or {}),
        output_dir=str(out),
        max_steps=STEPS,
        save_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return cls(model=model, args=args, train_dataset=_dataset(), **kw)


def _losses(trainer) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in trainer.state.log_history if "loss" in r}


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainer_full")
    model = _model()
    backbone_names = set(model.backbone.state_dict())
    trainer = _trainer(out, model)
    trainer.train()
    trainer.save_model(str(out / "final"))
    return out, trainer, model, backbone_names


def test_saved_folders_hold_the_side_network_and_no_backbone_tensor(full_run):
    out, _, model, backbone_names = full_run
    side = model.side.state_dict()
    for folder in (out / "checkpoint-3", out / f"checkpoint-{STEPS}", out / "final"):
        assert (folder / "ladder_config.json").is_file()
        assert not (folder / "model.safetensors").exists()
        weights = load_tensors(folder / WEIGHTS_NAME)
        assert set(weights) == set(side) and not set(weights) & backbone_names
        index = json.loads((folder / INDEX_NAME).read_text())["weight_map"]
        assert index == {f"side.{k}": WEIGHTS_NAME for k in side}  # what Trainer reads back on resume
        total = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
        assert total < 10 * sum(t.numel() * 4 for t in side.values()) + 50_000  # side + its optimizer state
    final_weights = sum(p.stat().st_size for p in (out / "final").iterdir() if p.suffix == ".safetensors")
    assert final_weights < sum(t.numel() * 4 for t in side.values()) + 20_000  # the side network alone
    torch.manual_seed(0)
    loaded = LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification"), out / "final")
    assert torch.equal(loaded.side.head[0].weight, model.side.head[0].weight.cpu())


@pytest.mark.parametrize("cls", [Trainer, _ElsewhereTrainer, LadderTrainer])
def test_resume_from_checkpoint_continues_the_same_run(tmp_path, full_run, cls):
    _, full, model, _ = full_run
    stopped = _trainer(tmp_path, _model(), callbacks=[_StopAt(3)], cls=cls)
    stopped.train()
    resumed = _trainer(
        tmp_path, _model(), cls=cls
    )  # fresh weights: the checkpoint must bring the trained ones back
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    expected = _losses(full)
    # steps 1-3 come back with the checkpoint's trainer_state.json; 4-6 are trained after the resume
    assert _losses(resumed) == pytest.approx(expected, rel=1e-5) and len(expected) == STEPS
    assert len(set(expected.values())) > 2, "degenerate test: the loss does not move"
    for name, tensor in resumed.model.side.state_dict().items():
        assert torch.allclose(tensor, model.side.state_dict()[name], atol=1e-6), name
    state = json.loads((tmp_path / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS


def test_trainer_activation_checkpointing_checkpoints_the_side_layers(tmp_path, full_run):
    """``TrainingArguments(activation_checkpointing=True)`` (``gradient_checkpointing`` before transformers 5.23)
    switches LST's side checkpointing: the same run."""
    _, full, _, _ = full_run
    model = _model()
    trainer = _trainer(tmp_path, model, training_args={CHECKPOINTING: True})
    trainer.train()
    assert model.is_activation_checkpointing
    assert all(stack.checkpointing for stack in model.side.stacks.values())
    assert _losses(trainer) == pytest.approx(_losses(full), rel=1e-5)
    saved = json.loads((tmp_path / f"checkpoint-{STEPS}" / "ladder_config.json").read_text())
    assert saved["side_checkpointing"] is True


def test_ladder_trainer_resumes_from_a_folder_without_the_index(tmp_path, full_run):
    """laddertune 0.1's LadderTrainer wrote no index file: LadderTrainer still resumes from such a folder."""
    _, full, model, _ = full_run
    _trainer(tmp_path, _model(), callbacks=[_StopAt(3)]).train()
    (tmp_path / "checkpoint-3" / INDEX_NAME).unlink()
    with pytest.raises(ValueError, match="valid checkpoint"):  # a plain Trainer finds no weights there
        _trainer(tmp_path, _model()).train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    resumed = _trainer(tmp_path, _model(), cls=LadderTrainer)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    assert _losses(resumed) == pytest.approx(_losses(full), rel=1e-5)


def test_load_best_model_at_end_brings_back_the_best_checkpoint(tmp_path):
    """The 'best' here is the higher eval loss, at step 3: loading it back must replace the step-6 weights."""
    model = _model()
    args = {
        "eval_strategy": "steps",
        "eval_steps": 3,
        "load_best_model_at_end": True,
        "metric_for_best_model": "loss",
        "greater_is_better": True,
    }
    trainer = _trainer(tmp_path, model, training_args=args, eval_dataset=_dataset(8))
    trainer.train()
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-3")
    best, last = (load_tensors(tmp_path / f"checkpoint-{n}" / WEIGHTS_NAME) for n in (3, STEPS))
    side = model.side.state_dict()
    assert all(torch.equal(t, best[n]) for n, t in side.items())
    assert not all(torch.equal(t, last[n]) for n, t in side.items())
