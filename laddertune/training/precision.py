"""Mixed precision of the training step: ``--precision fp32|bf16|fp16``.

The trainable weights and the optimizer state stay float32 (master weights); only the forward runs under
``torch.autocast`` in the chosen dtype. fp16 has a narrow range, so its gradients go through
``torch.amp.GradScaler`` (scale the loss, unscale before clipping, skip steps whose gradients overflowed). bf16 has
float32's range and needs no scaler. All of this is torch's own machinery; this module only chooses it per run.

On CPU, autocast supports bf16 (and fp16 on recent torch); GradScaler on CPU exists in torch >= 2.3.
"""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The autocast context and (for fp16) the gradient scaler of one run.

    Args:
        name: ``fp32``, ``bf16`` or ``fp16``.
        device: where the step runs (autocast and the scaler are per device type).
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = name, torch.device(device)
        self.dtype = AUTOCAST_DTYPES.get(name, torch.float32)
        self.scaler = torch.amp.GradScaler(self.device.type) if name == "fp16" else None

    def autocast(self):
        """The context for the forward pass (and the loss); a no-op for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer) -> None:
        """Bring the gradients back to their true size before clipping (fp16)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> bool:
        """``optimizer.step()``; with the fp16 scaler, skipped when a gradient overflowed. True if it stepped."""
        if not self.scaler:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scale drops exactly when the step was skipped

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)

    def describe(self) -> dict:
        """What results.json records about the run's precision."""
        out = {
            "precision": self.name,
            "autocast_dtype": str(self.dtype).removeprefix("torch.") if self.name != "fp32" else None,
        }
        out["master_weights"] = "float32"
        out["grad_scaler"] = self.scaler is not None
        if self.scaler:
            out["final_loss_scale"] = self.scaler.get_scale()
        return out
