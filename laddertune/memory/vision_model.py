"""CLIP-T5 for the memory predictor: the paper's Table 3 models and the authors' per-task training batches.

``clip-t5-base`` is T5-base (the built-in ``t5-base`` config) with VL-T5's trainable visual embedding of 36 CLIP
RN101 grid features of 2048-d per image (docs/concepts.md#fact-clip-t5). LST is :class:`laddertune.vision.VisionLadderModel`
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

import torch
from torch import nn

from ..baselines import BASELINE_OPTIONS
from ..core import LadderConfig
from ..errors import ConfigError
from ..vision import VisionLadderModel, VisualConfig
from ..vision.baselines import VisualBackboneModel
from .training_model import method_options
from .vision_settings import (  # noqa: F401  (re-exported)
    PAPER_VL_BATCHES,
    PAPER_VL_OPTIONS,
    PAPER_VL_REDUCTION,
    VL_BACKBONES,
    VisualInput,
    VLTaskBatch,
)


def check_vl_options(options, head: str) -> None:
    """One-line ConfigErrors for what the CLIP-T5 trace does not cover."""
    ladders = isinstance(options, LadderConfig) and options.variant.ladders
    if not (ladders or type(options) in BASELINE_OPTIONS.values()):
        raise ConfigError(f"CLIP-T5 memory: method {options.name} is not traced; LST or a baseline")
    if getattr(options, "backbone_dtype", None) in ("int8", "nf4"):
        raise ConfigError("CLIP-T5 memory: a quantized backbone is not traced; use a float dtype")
    if head != "seq2seq_lm":
        raise ConfigError(f"CLIP-T5 generates its answers: head must be seq2seq_lm, got {head!r}")
    if getattr(options, "loss_chunk_size", None):
        raise ConfigError("CLIP-T5 memory: the chunked LM loss is not part of VisionLadderModel")


def build_vl_training_model(
    config,
    method,
    visual: VisualInput,
    *,
    dtype: torch.dtype = torch.float32,
    attn: str = "sdpa",
    precision=None,
    **method_values,
) -> tuple[nn.Module, dict]:
    """CLIP-T5 as ``method`` trains it, from a T5 config (random weights; works under FakeTensorMode).

    Args:
        method: a method's name, with its options as keywords over the paper's VL settings
            (:data:`PAPER_VL_OPTIONS`), or the method's options object.

    Returns:
        (model in train mode, the method's settings as a dict).
    """
    import transformers

    if isinstance(method, str):
        method = method_options(method, attn=attn, base=PAPER_VL_OPTIONS.get(method), **method_values)
    options = method

    shape = VisualConfig(feature_dim=visual.feature_dim, max_images=max(2, visual.images))
    backbone = transformers.AutoModelForSeq2SeqLM.from_config(config, attn_implementation=attn, dtype=dtype)
    settings = {"images": visual.images, "regions": visual.regions, "feature_dim": visual.feature_dim}
    if isinstance(options, LadderConfig):
        model = VisionLadderModel(backbone, shape, options)
        kept = model.side.stacks["encoder"].kept
        settings |= {"reduction_factor": options.reduction_factor, "side_layers": kept}
    else:
        model = VisualBackboneModel(backbone, shape, options.name, options)
        settings |= {k: v for k, v in options.to_dict().items() if k != "freeze_layers"}
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
