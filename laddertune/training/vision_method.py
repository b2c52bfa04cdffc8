"""A training method on CLIP-T5: the method's model with image features, for the training loop, checkpoints,
``evaluate`` and ``predict`` alike.

LST builds a :class:`~laddertune.vision.VisionLadderModel` (the T5 reads the text only, the image features enter
the side network); the baselines (full, lora, adapter, bitfit, prompt) a
:class:`~laddertune.vision.baselines.VisualBackboneModel` (the image features enter the T5 encoder beside the text,
VL-Adapter's CLIP-T5), both with trainable visual embeddings. Checkpoint folders hold what the method saves for text
(LST: the side network, the visual embedding included, and ``ladder_config.json``; a baseline: its trainable
parameters, the visual embedding included) and ``vision_config.json``, the visual input's shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, DataError
from ..io import save_json
from ..methods.base import TrainingMethod
from ..vision.baselines import VisualBackboneModel
from ..vision.model import VISION_CONFIG_NAME, VisionLadderModel, read_visual_config
from ..vision.visual_embedding import VisualConfig


class VisionMethod(TrainingMethod):
    """``method`` (a :class:`TrainingMethod` of :mod:`laddertune.methods`) on CLIP-T5.

    Args:
        method: the text method (its options, name and settings are the run's).
        visual: the image features' shape (from the feature file); a checkpoint's own ``vision_config.json``
            is what loads it, and must agree.
    """

    def __init__(self, method: TrainingMethod, visual: VisualConfig) -> None:
        super().__init__(method.spec)
        self.method, self.visual = method, visual

    def require(self, device: torch.device) -> None:
        self.method.require(device)

    def build(self, backbone: nn.Module, options, *, device: torch.device, calibration=None) -> nn.Module:
        backbone = backbone.to(device)
        with torch.device(device):  # the new parameters are created where the backbone is
            if self.spec.side_network:
                return VisionLadderModel(backbone, self.visual, options)
            return VisualBackboneModel(backbone, self.visual, self.name, options)

    def load_trained(
        self, backbone: nn.Module, options, directory: Path, *, device: torch.device
    ) -> nn.Module:
        """The trained model of ``directory`` (the shape of its visual input from its ``vision_config.json``)."""
        saved = read_visual_config(directory)
        if saved.feature_dim != self.visual.feature_dim:
            raise DataError(
                f"the image features are {self.visual.feature_dim}-d, {directory} was trained on "
                f"{saved.feature_dim}-d features: give features from the same image encoder"
            )
        if self.spec.side_network:
            with torch.device(device):
                return VisionLadderModel.from_pretrained(backbone.to(device), directory)
        if options is None:
            raise CheckpointError(
                f"a {self.name} checkpoint needs the run's train_config.json next to {directory}"
            )
        model = VisionMethod(self.method, saved).build(backbone, options, device=device)
        with torch.no_grad():
            for target, tensor in self.read_weights(model, directory):
                target.copy_(tensor)
        return model

    def save_weights(self, model: nn.Module, directory: Path) -> None:
        if self.spec.side_network:
            model.save_pretrained(directory)  # the side network and vision_config.json
            return
        self.method.save_weights(model, directory)
        save_json(Path(directory) / VISION_CONFIG_NAME, model.visual_config.to_dict())

    def read_weights(self, model: nn.Module, directory: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # LST: the text method reads the side network (the visual embedding is a part of it) against the backbone
        return self.method.read_weights(model.ladder if self.spec.side_network else model, directory)

    def compute_settings(self, options) -> dict:
        return self.method.compute_settings(options)
