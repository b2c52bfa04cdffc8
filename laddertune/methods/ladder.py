"""LST and the paper's Figure 8 ablations (``side-tuning``, ``pruned``): a ladder side network next to a frozen
backbone (:class:`~laddertune.core.model.LadderModel`), configured by a :class:`~laddertune.core.config.LadderConfig`.

What they train is the side network alone: checkpoints hold ``ladder_model.safetensors`` and
``ladder_config.json`` (no backbone weight), tied to the backbone by its fingerprint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..core import LadderModel, get_ladder_model
from ..core.config import LadderConfig
from ..core.side_checkpoint import WEIGHTS_NAME, backbone_mismatch, read_side_config
from ..core.tap_projection import match_backbone_dtype
from ..errors import CheckpointError
from ..io import load_tensors
from .base import TrainingMethod, matched_tensors

QUANTIZED = ("int8", "nf4")


class LadderMethod(TrainingMethod):
    """``lst``, ``side-tuning`` and ``pruned``: their options are a :class:`LadderConfig` whose ``method`` is the
    method's name."""

    def needs_calibration(self, options: LadderConfig) -> bool:
        pca = options.variant.ladders and options.tap_projection in (None, "pca")
        return options.init == "fisher" or pca

    def build(self, backbone: nn.Module, options: LadderConfig, *, device, calibration=None) -> LadderModel:
        backbone = backbone.to(device)
        with torch.device(device):  # the side network's parameters are created where the backbone is
            return get_ladder_model(backbone, options, calibration_data=calibration)

    def build_for_trace(self, backbone: nn.Module, options: LadderConfig, quantize) -> LadderModel:
        storage = options.backbone_dtype
        floating = dataclasses.replace(
            options, backbone_dtype=None if storage in QUANTIZED else storage, quantize_embeddings=False
        )
        # the projection a training run fits (its values do not change the memory): left unfitted
        model = get_ladder_model(backbone, floating, fit_projection=False)
        if storage in QUANTIZED:
            quantize(model.backbone, storage, options.quantize_embeddings)
            match_backbone_dtype(model)
        return model

    def load_trained(self, backbone: nn.Module, options, directory: Path, *, device) -> LadderModel:
        """The side network saved in ``directory`` (its own ``ladder_config.json``) next to ``backbone``."""
        backbone = backbone.to(device)
        with torch.device(device):
            return LadderModel.from_pretrained(backbone, directory)

    def save_weights(self, model: LadderModel, directory: Path) -> None:
        model.save_pretrained(directory)

    def read_weights(self, model: LadderModel, directory: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
        saved = read_side_config(directory)
        built = model.ladder_config
        for name in (
            "method",
            "final_shortcut",
            "final_gate",
            "reentry_layers",
        ):  # the same weights mean another network under another wiring
            if getattr(saved, name) != getattr(built, name):
                raise CheckpointError(
                    f"{directory} was trained with {name}={getattr(saved, name)!r}, this run builds "
                    f"{getattr(built, name)!r}: pass the same setting (--{name.replace('_', '-')})"
                )
        why = backbone_mismatch(model, saved)
        if (
            why
        ):  # resuming onto another backbone (a moved run's recorded folder cannot tell: the fingerprint does)
            raise CheckpointError(f"{directory} was trained on another backbone than this one ({why})")
        return matched_tensors(directory, load_tensors(directory / WEIGHTS_NAME), model.side.state_dict())

    def compute_settings(self, options: LadderConfig) -> dict:
        return {
            "backbone_dtype": options.backbone_dtype or "float32",
            "attn": options.attn_implementation,
            "side_checkpointing": options.side_checkpointing,
        }

    def trace_settings(self, options: LadderConfig, model: LadderModel) -> dict:
        return {
            "reduction_factor": options.reduction_factor,
            "side_layers": model.side.stacks[next(iter(model.side.stacks))].kept,
            "backbone_dropout": options.backbone_dropout,
            "loss_chunk_size": model.ladder_config.loss_chunk_size,
            "side_checkpointing": model.ladder_config.side_checkpointing,
            "tap_projection": model.ladder_config.tap_projection,
            "tap_rank": next(iter(model.side.stacks.values())).tap_width,
            "side_attention_heads": model.ladder_config.side_attention_heads,
            "reentry_layers": options.reentry_layers,
        }
