"""``--device-map auto`` in a training run: the backbone spread over devices (:mod:`laddertune.core.placement`),
the batches sent to the side network's device. Hooks of :class:`~laddertune.training.loop.Run`."""

from __future__ import annotations

import torch

from ..core.placement import place_backbone
from ..errors import ConfigError
from .device import move_batch


class PlacementHooks:
    """What :class:`~laddertune.training.loop.Run` asks of backbone placement."""

    def place_backbone(self) -> None:
        if self.dist is not None:
            raise ConfigError(
                "--device-map with torchrun/accelerate is not supported: one of the two per run"
            )
        place_backbone(self.model, self.config.devices.device_map)

    def to_model_device(self, batch: dict) -> dict:
        """The batch on the side network's device (where the loss is computed), or on this rank's device under
        data parallelism; unchanged on the CPU."""
        if self.dist is not None:
            device = self.dist.device
        else:
            device = getattr(self.model, "device", torch.device("cpu"))
        if device.type == "cpu":
            return batch
        return move_batch(batch, device)
