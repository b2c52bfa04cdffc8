"""Where a run computes: ``--device auto|cpu|cuda|cuda:N`` resolved to a ``torch.device``, and batches moved there.

``auto`` is the first GPU when CUDA is available, else the CPU. An explicit ``cuda`` without CUDA, or ``cuda:N``
beyond the GPUs present, is a :class:`~laddertune.errors.ConfigError` (one line, exit 2 in the CLI) rather than
torch's error at the first ``.to()``, which comes after the data and the model were loaded.
"""

from __future__ import annotations

import torch

from ..core.compute import check_device_name
from ..core.packed_tap import PackedTap
from ..errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for ``name``; raises ConfigError when the device is not there."""
    check_device_name(name)
    if name == "auto":
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    device = torch.device(name)
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but torch finds no CUDA GPU (torch {torch.__version__})"
        )
    count = torch.cuda.device_count()
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= count:
        raise ConfigError(
            f"device {name!r} asked for, but there {'is' if count == 1 else 'are'} {count} GPU(s)"
        )
    return torch.device("cuda", index)


def move_batch(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor on ``device`` (non-blocking from pinned memory; a no-op on the same device),
    nested dicts included (a tap-cached batch's ``taps``: stack -> tap ->
    :class:`~laddertune.core.packed_tap.PackedTap`)."""
    return {k: _moved(v, device) for k, v in batch.items()}


def _moved(value, device: torch.device):
    if isinstance(value, torch.Tensor | PackedTap):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    return value


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's trainable parameters are (its first parameter's device when none trains; the CPU for a
    model without parameters)."""
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return (trainable or params)[0].device if params else torch.device("cpu")
