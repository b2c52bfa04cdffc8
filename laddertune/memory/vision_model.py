"""CLIP-T5 for the memory predictor: the paper's Table 3 models and the authors' per-task training batches.

``clip-t5-base`` is T5-base (the built-in ``t5-base`` config) with VL-T5's trainable visual embedding of 36 CLIP
RN101 grid features of 2048-d per image (lst-reference §7). LST is :class:`laddertune.vision.VisionLadderModel`
(the backbone reads the text only, the image enters the side network); every baseline is
:class:`laddertune.vision.baselines.VisualBackboneModel` (the image enters the backbone encoder, as in VL-Adapter).
The image encoder is not part of training: the authors' loaders read precomputed features from HDF5.

The authors' setting, read from ylsung/Ladder-Side-Tuning (commit c09bf67), ``VL-T5/scripts/image/*.sh`` and
``VL-T5/src/multitask.py``: ``--batch_size 300`` (one GPU), ``--feature RN101 --n_boxes 36 --downsample``, fp32
(no ``--fp16``), and per task in ``multitask.py``: VQA batch 300 with text capped at 20 tokens, GQA
``int(300 * 100 / 60)`` = 500 at 20, NLVR2 ``int(300 * 20 / 60)`` = 100 (two images) at 20, COCO captions
``int(300 * 50 / 60)`` = 250 with targets capped at ``gen_max_length`` 40. One batch holds one task, so a run's
peak is its largest task batch. Lengths here are the caps (a batch pads to its longest example, and a few hundred
questions reach the cap); caption inputs are the prompt ``caption:`` alone (3 T5 tokens); answers are capped at 10
tokens (VL-T5's ``vqa_data.py``), NLVR2's ``true``/``false`` is 2. Baselines as the authors' scripts: LoRA
``--lora_dim 150``, Adapters ``--reduction_factor 4``, prompt tuning ``--encoder_prompt_len 40`` (their MLP
reparametrisation, ``--mid_dim 800``, is not modelled: PEFT's prompt embedding is trained directly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..baselines import BaselineConfig
from ..core import LadderConfig
from ..errors import ConfigError
from ..vision import VisionLadderModel, VisualConfig
from ..vision.baselines import VisualBackboneModel

VL_BACKBONES = {"clip-t5-base": "t5-base"}  # name -> the built-in text config of its T5
VL_METHODS = ("lst", "full", "lora", "adapter", "bitfit", "prompt")
PAPER_VL_REDUCTION = 4  # lst-reference §7: r = 4, all layers
PAPER_VL_BASELINES = BaselineConfig(lora_rank=150, adapter_reduction=4, prompt_length=40)


@dataclass(frozen=True)
class VisualInput:
    """The image part of a CLIP-T5 training batch.

    Args:
        images: images per example (2 for NLVR2).
        regions: grid features per image (36: CLIP RN101's 7x7 pooled to 6x6).
        feature_dim: size of one feature (2048 for RN101).
    """

    images: int = 1
    regions: int = 36
    feature_dim: int = 2048

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


def check_vl_options(method: str, head: str, backbone_dtype: str | None, loss_chunk_size) -> None:
    """One-line ConfigErrors for what the CLIP-T5 trace does not cover."""
    if method not in VL_METHODS:
        raise ConfigError(f"CLIP-T5 memory: method must be one of {', '.join(VL_METHODS)}, got {method!r}")
    if head != "seq2seq_lm":
        raise ConfigError(f"CLIP-T5 generates its answers: head must be seq2seq_lm, got {head!r}")
    if backbone_dtype in ("int8", "nf4"):
        raise ConfigError(f"CLIP-T5 memory: a {backbone_dtype} backbone is not traced; use a float dtype")
    if loss_chunk_size is not None:
        raise ConfigError("CLIP-T5 memory: the chunked LM loss is not part of VisionLadderModel")


def build_vl_training_model(
    config,
    method: str,
    visual: VisualInput,
    *,
    reduction_factor: int = PAPER_VL_REDUCTION,
    side_layers: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    baseline_config: BaselineConfig | None = None,
    backbone_dtype: str | None = None,
    attn: str = "sdpa",
    side_checkpointing: bool = False,
    **_,
) -> tuple[nn.Module, dict]:
    """CLIP-T5 as ``method`` trains it, from a T5 config (random weights; works under FakeTensorMode).

    Returns:
        (model in train mode, the method's settings as a dict).
    """
    import transformers

    shape = VisualConfig(feature_dim=visual.feature_dim, max_images=max(2, visual.images))
    backbone = transformers.AutoModelForSeq2SeqLM.from_config(config, attn_implementation=attn, dtype=dtype)
    settings = {"images": visual.images, "regions": visual.regions, "feature_dim": visual.feature_dim}
    if method == "lst":
        ladder = LadderConfig(
            reduction_factor=reduction_factor,
            side_layers=side_layers,
            init="random",
            backbone_dtype=backbone_dtype if backbone_dtype not in (None, "float32") else None,
            attn_implementation=attn,
            side_checkpointing=side_checkpointing,
        )
        model = VisionLadderModel(backbone, shape, ladder)
        kept = model.side.stacks["encoder"].kept
        settings |= {"reduction_factor": reduction_factor, "side_layers": kept}
    else:
        baseline_config = baseline_config or PAPER_VL_BASELINES
        model = VisualBackboneModel(backbone, shape, method, baseline_config)
        prefix = {"lora": "lora_", "adapter": "adapter_", "prompt": "prompt_"}.get(method)
        if prefix:
            settings |= {k: v for k, v in baseline_config.to_dict().items() if k.startswith(prefix)}
    settings["attn"] = attn
    model.train()
    return model, settings


def make_vl_batch(
    config, visual: VisualInput, batch_size: int, source_length: int, target_length: int
) -> dict:
    """A full-length CLIP-T5 batch: text ids, ``(B, V, N, F)`` features and their boxes, labels."""
    hi = max(3, config.vocab_size)
    ids = torch.randint(2, hi, (batch_size, source_length))
    grid = (batch_size, visual.images, visual.regions)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "vis_feats": torch.randn(*grid, visual.feature_dim),
        "vis_boxes": torch.rand(*grid, 4),
        "labels": torch.randint(2, hi, (batch_size, target_length)),
    }
