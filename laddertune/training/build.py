"""What a run is made of: seeding, the data order, the data format and head, the backbone and the method's model."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
import transformers

from ..core.backbones import load_backbone, resolve_backbone
from ..data.layouts import LAYOUTS
from ..errors import ConfigError
from ..methods import get_method
from .config import TrainConfig

ENCODER_ONLY = ("bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2")
logger = logging.getLogger(__name__)
HEADS = {"classification": "sequence_classification", "text2text": "seq2seq_lm", "causal": "causal_lm"}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (model init and dropout depend on torch's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch as example indices: a shuffle seeded by (seed, epoch) alone.

    Seeding per epoch makes any epoch's order reproducible without replaying the earlier ones, which is what
    resuming in the middle of an epoch needs. The last batch may be smaller.
    """
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch + 1]).generate_state(1)[0]))
    order = torch.randperm(n, generator=g).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def choose_format(
    backbone: str, fmt: str | None, trust_remote_code: bool = False, spec=None
) -> tuple[str, str]:
    """(data format, backbone head): text2text for encoder-decoders (T5), classification otherwise; a generative
    layout (prompt_completion, alpaca, chat, text) takes the backbone's LM head (seq2seq for an encoder-decoder,
    causal for a decoder-only model).

    With the task's ``spec`` and no ``fmt``, a decoder-only backbone whose labels are free text (see
    :func:`free_text_labels`) is refused rather than trained as a classifier over every distinct text.
    """
    src = resolve_backbone(backbone)
    try:
        kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
        cfg = transformers.AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"cannot read the config of backbone {backbone!r}: {first}") from None
    seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
    if fmt in LAYOUTS:
        if cfg.model_type in ENCODER_ONLY:
            raise ConfigError(
                f"{fmt} rows are learned by an LM head: {backbone!r} is {cfg.model_type}, an encoder without one; "
                "use a decoder-only or an encoder-decoder backbone"
            )
        return fmt, "seq2seq_lm" if seq2seq else "causal_lm"
    decoder_only = not seq2seq and cfg.model_type not in ENCODER_ONLY
    if fmt is None and decoder_only and spec is not None and (why := free_text_labels(spec)):
        raise ConfigError(
            f"{why}: a decoder-only backbone ({cfg.model_type}) would train a {spec.num_labels}-way classifier on "
            "them; pass --format causal to generate the labels (or --format classification to train it anyway)"
        )
    fmt = fmt or ("text2text" if seq2seq else "classification")
    if fmt == "text2text" and not seq2seq:
        raise ConfigError(
            f"format text2text needs an encoder-decoder backbone (T5); {backbone!r} is {cfg.model_type}"
        )
    if fmt == "causal" and (seq2seq or cfg.model_type in ENCODER_ONLY):
        raise ConfigError(f"format causal needs a decoder-only backbone; {backbone!r} is {cfg.model_type}")
    return fmt, HEADS[fmt]


FREE_TEXT_CLASSES = 50  # more distinct string labels than this are answers to generate, not classes
FREE_TEXT_WORDS = 4  # a label of this many words reads as a sentence


def free_text_labels(spec) -> str | None:
    """Why the task's labels look like free text rather than class names (None when they do not): more than
    :data:`FREE_TEXT_CLASSES` distinct string labels, or a label of :data:`FREE_TEXT_WORDS` words or more."""
    names = [n for n in spec.label_names if not _is_number(n)]
    if not names:
        return None
    sentence = next((n for n in names if len(n.split()) >= FREE_TEXT_WORDS), None)
    if len(names) <= FREE_TEXT_CLASSES and sentence is None:
        return None
    example = sentence or max(names, key=len)
    example = example if len(example) <= 60 else example[:57] + "..."
    return f"label column {spec.label_column!r} holds {len(names)} distinct texts such as {example!r}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def position_limit(backbone: str, trust_remote_code: bool = False) -> int | None:
    """The longest input the backbone's position embeddings allow, or None (relative positions: T5)."""
    src = resolve_backbone(backbone)
    kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    cfg = transformers.AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code, **kwargs)
    if getattr(cfg, "is_encoder_decoder", False) and getattr(cfg, "relative_attention_num_buckets", None):
        return None
    limit = getattr(cfg, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def clamp_max_length(config: TrainConfig) -> None:
    """Lower ``config.data.max_length`` to the backbone's position limit, with a notice.

    Longer inputs would index past the position embeddings and crash inside the model mid-run; clamping happens
    while the data is prepared, before anything is written to the run folder.
    """
    limit = position_limit(config.model.backbone, config.model.trust_remote_code)
    if limit is not None and config.data.max_length > limit:
        logger.warning(
            "max_length %d is beyond %s's %d positions: clamped to %d", config.data.max_length,
            config.model.backbone, limit, limit,
        )  # fmt: skip
        config.data.max_length = limit


def load_backbone_for(config: TrainConfig, spec, head: str, tokenizer):
    """The backbone of ``config`` with ``head`` (see :func:`load_task_backbone`)."""
    model = config.model
    return load_task_backbone(
        model.backbone, spec, head, tokenizer, model.trust_remote_code, model.allow_pickle
    )


def load_task_backbone(
    name: str, spec, head: str, tokenizer, trust_remote_code: bool = False, allow_pickle: bool = False
):
    """Backbone ``name`` with ``head``; for classification ``num_labels``, class names and problem type from the
    task, so that checkpoints carry them. Loaded in float32: LST casts or quantizes it to ``backbone_dtype`` in
    :func:`get_ladder_model` (after any pruned init has read the full-precision weights); the baselines train it in
    float32 (their master weights)."""
    kwargs = {}
    if head == "sequence_classification":
        kwargs["num_labels"] = spec.num_labels
        kwargs["problem_type"] = "regression" if spec.is_regression else "single_label_classification"
        if spec.label_names:
            kwargs["id2label"] = dict(enumerate(spec.label_names))
            kwargs["label2id"] = spec.label_map
    backbone = load_backbone(
        name, head, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, **kwargs
    )
    if (
        backbone.config.pad_token_id is None
    ):  # decoder-only classifiers find the last token through the pad id
        backbone.config.pad_token_id = tokenizer.pad_token_id
    return backbone


def build_model(config: TrainConfig, spec, head: str, tokenizer, calibration=None, device=None, method=None):
    """Load the backbone and build the method's model around it on ``device`` (default CPU).

    ``calibration``: batches for a Fisher init, already on ``device``. ``method``: the method object that builds
    (default: the config's; a vision-and-language run passes its CLIP-T5 form).
    """
    device = torch.device(device or "cpu")
    backbone = load_backbone_for(config, spec, head, tokenizer)  # float32, on the CPU
    method = method or get_method(config.method_name)
    return method.build(backbone, config.method, device=device, calibration=calibration)


def parameter_counts(model) -> dict:
    """Trainable and total parameter counts and the trainable share in percent."""
    params = list(model.parameters())
    trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    return {"trainable": trainable, "total": total, "trainable_percent": 100 * trainable / total}
