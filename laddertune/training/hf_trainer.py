"""``LadderTrainer``: the name laddertune 0.1 gave ``transformers.Trainer`` for a LadderModel; now a thin subclass.

Any ``transformers.Trainer`` (TRL's trainers included) trains a :class:`~laddertune.core.LadderModel`, saves
side-only checkpoints and resumes from them: the model is a ``PreTrainedModel`` whose ``save_pretrained`` writes the
side network only, with transformers' index file that the Trainer reads back (:mod:`laddertune.core.pretrained`).
``LadderTrainer`` adds one thing: it also resumes from (and loads the best model of) checkpoint folders written
before that index existed (laddertune 0.1), through the fingerprint-checked side loader.

Imported by name (not from :mod:`laddertune.training`): ``Trainer`` pulls in accelerate, which the CLI never needs.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer

from ..core import LadderModel
from ..core.side_checkpoint import INDEX_NAME, load_side_weights, read_side_config


class LadderTrainer(Trainer):
    """``transformers.Trainer``, which also reads laddertune 0.1's side-only checkpoint folders (no index file)."""

    def _old_side_folder(self, folder: str, model=None) -> LadderModel | None:
        """The LadderModel to load ``folder`` into when it is a side-only folder without transformers' index."""
        model = (
            model
            if model is not None
            else self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        )
        if isinstance(model, LadderModel) and not (Path(folder) / INDEX_NAME).is_file():
            return model
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = self._old_side_folder(resume_from_checkpoint, model)
        if target is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_side_weights(target, resume_from_checkpoint, read_side_config(resume_from_checkpoint))

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        target = self._old_side_folder(best)
        if target is None:
            return super()._load_best_model()
        load_side_weights(target, best, read_side_config(best))
