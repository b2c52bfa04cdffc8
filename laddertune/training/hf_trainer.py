"""``LadderTrainer``: ``transformers.Trainer`` for a :class:`~laddertune.core.LadderModel`, saving side-only checkpoints.

A plain ``Trainer`` trains a LadderModel, but it saves ``model.state_dict()``: the frozen backbone too (93 MB for
MiniLM), and it cannot resume from a side-only folder. ``LadderTrainer`` changes only how the weights are written
and read: every save (periodic ``checkpoint-N`` and ``save_model``) holds the side network
(``ladder_model.safetensors``) and ``ladder_config.json`` and never a backbone tensor; ``resume_from_checkpoint``
and ``load_best_model_at_end`` load those files back onto the model's own backbone (fingerprint-checked). The rest
of each checkpoint (optimizer, scheduler, RNG, ``trainer_state.json``, ``training_args.bin``) is the Trainer's own,
in its own formats: it holds the side network's optimizer state alone, since only its parameters train.

>>> from laddertune.training.hf_trainer import LadderTrainer
>>> LadderTrainer(model=ladder_model, args=TrainingArguments(...), train_dataset=...).train()

Imported by name (not from :mod:`laddertune.training`): ``Trainer`` pulls in accelerate, which the CLI never needs.
"""

from __future__ import annotations

import os

import torch
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME

from ..core import LadderModel
from ..core.side_checkpoint import load_side_weights, read_side_config


class LadderTrainer(Trainer):
    """``transformers.Trainer`` whose checkpoints of a LadderModel hold only the side network."""

    def _ladder_model(self) -> LadderModel | None:
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        return model if isinstance(model, LadderModel) else None

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self._ladder_model()
        if model is None:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:  # rank 0 of a data-parallel job writes
            return
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir)  # side weights + ladder_config.json, atomically
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))  # what Trainer itself writes

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = model if model is not None else self._ladder_model()
        if not isinstance(target, LadderModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_side_weights(target, resume_from_checkpoint, read_side_config(resume_from_checkpoint))

    def _load_best_model(self) -> None:
        model = self._ladder_model()
        if model is None:
            return super()._load_best_model()
        best = self.state.best_model_checkpoint
        load_side_weights(model, best, read_side_config(best))
