"""The paper's CLIP-T5 settings that the memory predictor starts from (Section 7; no torch import here): the image
part of a batch, each task's batch in the authors' multi-task run, and each method's options."""

from __future__ import annotations

from dataclasses import dataclass

from ..baselines.options import AdapterOptions, LoraOptions, PromptOptions
from ..core.config import LadderConfig
from ..errors import ConfigError

VL_BACKBONES = {"clip-t5-base": "t5-base"}  # name -> the built-in text config of its T5
PAPER_VL_REDUCTION = 4  # the paper's Section 7: r = 4, all layers
# The paper's CLIP-T5 settings per method (Section 7): what a prediction starts from for a VL backbone.
PAPER_VL_OPTIONS = {
    "lst": LadderConfig(reduction_factor=PAPER_VL_REDUCTION),
    "lora": LoraOptions(lora_rank=150),
    "adapter": AdapterOptions(adapter_reduction=4),
    "prompt": PromptOptions(prompt_length=40),
}


@dataclass(frozen=True)
class VisualInput:
    """The image part of a CLIP-T5 training batch."""

    images: int = 1
    """Images per example (2 for NLVR2)."""
    regions: int = 36
    """CLIP-T5: grid features per image (36: CLIP RN101's 7x7 pooled to 6x6)."""
    feature_dim: int = 2048
    """CLIP-T5: the size of one image feature (2048 for RN101)."""

    def __post_init__(self) -> None:
        if min(self.images, self.regions, self.feature_dim) < 1:
            raise ConfigError("VisualInput: images, regions and feature_dim must be positive")


@dataclass(frozen=True)
class VLTaskBatch:
    """One task's training batch in the authors' multi-task run (see the module docstring)."""

    task: str
    batch_size: int
    source_length: int
    target_length: int
    visual: VisualInput = VisualInput()


PAPER_VL_BATCHES = {
    "vqa": VLTaskBatch("vqa", 300, 20, 10),
    "gqa": VLTaskBatch("gqa", 500, 20, 10),
    "nlvr": VLTaskBatch("nlvr", 100, 20, 2, VisualInput(images=2)),
    "caption": VLTaskBatch("caption", 250, 3, 40),
}
