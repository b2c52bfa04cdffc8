"""The compute settings that training, evaluation and the memory predictor all name (no torch import here)."""

from __future__ import annotations

import re

from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")  # the forward's autocast dtype; master weights stay float32
OPTIMIZERS = ("adamw", "adamw8bit")  # torch's AdamW, or bitsandbytes' 8-bit AdamW
# device types where AdamW runs torch's fused kernel (the trainer, and the predictor's device semantics)
FUSED_ADAMW = ("cuda", "cpu")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name) -> None:
    """Validate the spelling of a device setting (not whether the device exists)."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
