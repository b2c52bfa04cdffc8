"""What a training method is: an object that builds its model around a backbone, saves and loads what it trains,
and describes itself to results and to the memory predictor.

The registry (:mod:`.registry`) knows each method by name; the training loop, checkpoints, evaluation, prediction
and the memory predictor call these methods instead of comparing names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import atomic_save_tensors, load_tensors
from .registry import MethodSpec

TRAINABLE_WEIGHTS = (
    "trainable.safetensors"  # what a method without a side network saves: its trainable parameters
)


class TrainingMethod:
    """The base of every method. Subclasses implement :meth:`build`; the rest has defaults that fit a method whose
    trainable parameters are the model's ``requires_grad`` ones (the baselines)."""

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<method {self.name}>"

    # -- before anything loads ------------------------------------------------------------------------------------
    def require(self, device: torch.device) -> None:
        """Raise a one-line ConfigError when the method cannot run on ``device`` (default: it can)."""

    def needs_calibration(self, options) -> bool:
        """Whether :meth:`build` needs calibration batches (Fisher importance)."""
        return False

    # -- building ---------------------------------------------------------------------------------------------------
    def build(self, backbone: nn.Module, options, *, device: torch.device, calibration=None) -> nn.Module:
        """The model this method trains, around ``backbone`` (freshly loaded, float32, on the CPU), on ``device``."""
        raise NotImplementedError

    def build_for_trace(self, backbone: nn.Module, options, quantize) -> nn.Module:
        """The model the memory predictor traces (random weights, possibly fake tensors). ``quantize(module,
        dtype)`` stores ``module``'s linear layers as ``int8``/``nf4`` in the predictor's emulation of
        bitsandbytes, where the real kernels cannot run. Default: :meth:`build` on the backbone's device."""
        return self.build(backbone, options, device=next(backbone.parameters()).device)

    def load_trained(
        self, backbone: nn.Module, options, directory: Path, *, device: torch.device
    ) -> nn.Module:
        """The trained model of checkpoint folder ``directory`` around ``backbone``: built from ``options`` (the
        run's), then its weights loaded."""
        if options is None:
            raise CheckpointError(
                f"a {self.name} checkpoint needs the run's train_config.json next to {directory}"
            )
        model = self.build(backbone, options, device=device)
        with torch.no_grad():
            for target, tensor in self.read_weights(model, directory):
                target.copy_(tensor)
        return model

    # -- weights -----------------------------------------------------------------------------------------------------
    def trainable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Name -> parameter of everything that trains, in a fixed order (the optimizer's)."""
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def save_weights(self, model: nn.Module, directory: Path) -> None:
        """Write what the method trains into ``directory`` (the trainable parameters alone)."""
        atomic_save_tensors(directory / TRAINABLE_WEIGHTS, self.trainable(model), metadata={"format": "pt"})

    def read_weights(self, model: nn.Module, directory: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(model tensor, saved tensor) pairs of :meth:`save_weights`' file, every name and shape checked first."""
        return matched_tensors(directory, load_tensors(directory / TRAINABLE_WEIGHTS), self.trainable(model))

    # -- describing a run ----------------------------------------------------------------------------------------
    def compute_settings(self, options) -> dict:
        """What ``results.json`` records under ``compute`` for this method's backbone and kernels."""
        return {"backbone_dtype": "float32", "attn": None, "side_checkpointing": False}

    def trace_settings(self, options, model: nn.Module) -> dict:
        """The settings a memory prediction reports (its options, as JSON)."""
        return options.to_dict()


def matched_tensors(directory: Path, saved: dict, target: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(target tensor, saved tensor) pairs; names and shapes must match exactly (a one-line CheckpointError)."""
    if set(saved) != set(target):
        extra, missing = sorted(set(saved) - set(target)), sorted(set(target) - set(saved))
        raise CheckpointError(
            f"{directory} does not fit this model: unexpected {extra[:3]}, missing {missing[:3]}"
        )
    for name, tensor in saved.items():
        if target[name].shape != tensor.shape:
            shapes = f"{tuple(tensor.shape)}, expected {tuple(target[name].shape)}"
            raise CheckpointError(f"{directory}: {name} has shape {shapes}")
    return [(target[name], tensor) for name, tensor in saved.items()]
