"""The paper's baselines as training methods (``full``, ``lora``, ``adapter``, ``bitfit``, ``prompt``): the backbone
itself trains, through :func:`laddertune.baselines.prepare_baseline`; checkpoints hold the trainable parameters."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..baselines import FAMILIES, LoraOptions, prepare_baseline
from .base import TrainingMethod


class BaselineMethod(TrainingMethod):
    """One baseline of :mod:`laddertune.baselines`; its options are that method's options dataclass."""

    def build(self, backbone: nn.Module, options, *, device, calibration=None) -> nn.Module:
        return prepare_baseline(backbone.to(device), self.name, options).to(device)

    def build_for_trace(self, backbone: nn.Module, options, quantize) -> nn.Module:
        return prepare_baseline(backbone, self.name, _with_targets(options, backbone.config.model_type))

    def trace_settings(self, options, model: nn.Module) -> dict:
        return _with_targets(options, model.config.model_type).to_dict()


def _with_targets(options, model_type: str):
    """LoRA options with their target modules spelled out: the family's, or, for a family the baselines' table
    lacks (the predictor's Llama-3, Qwen2...), PEFT's own default targets."""
    if not isinstance(options, LoraOptions) or options.lora_targets is not None:
        return options
    if model_type in FAMILIES:
        return dataclasses.replace(options, lora_targets=FAMILIES[model_type].lora_targets)
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS

    if model_type in LORA_TARGETS:
        return dataclasses.replace(options, lora_targets=tuple(LORA_TARGETS[model_type]))
    return options
