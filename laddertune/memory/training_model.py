"""The model, batch, optimizer and iteration the memory predictor traces (and the real runs it is checked against).

:func:`build_training_model` builds what a method trains from a config (random weights; it also runs under
``FakeTensorMode``): LST around a frozen backbone stored in ``backbone_dtype``, a baseline of
:mod:`laddertune.baselines`, or QLoRA (:func:`laddertune.baselines.prepare_qlora` on an nf4 backbone).
int8/nf4 backbones are bitsandbytes' storage emulated by :mod:`.storage` (the predictor cannot run its kernels);
real CPU runs use float backbones only.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
from torch import nn

from ..baselines import FAMILIES, BaselineConfig, prepare_baseline, prepare_qlora
from ..core import LadderConfig, get_ladder_model
from ..errors import ConfigError
from .storage import EmulatedAdamW8bit, emulate_quantized_linears

METHODS = ("full", "lora", "adapter", "bitfit", "prompt", "lst", "qlora")
HEADS = ("seq2seq_lm", "causal_lm", "sequence_classification")
ATTN = ("sdpa", "eager")
OPTIMIZERS = ("adamw", "adamw8bit")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FLOAT_STORAGE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BACKBONE_DTYPES = (*FLOAT_STORAGE, "int8", "nf4")
ENCODER_ONLY = set("bert roberta distilbert albert electra deberta deberta-v2 xlm-roberta mpnet".split())
# which BaselineConfig fields each method reports as its settings
_SETTING_PREFIX = {"full": "freeze", "bitfit": "freeze", "lora": "lora_", "qlora": "lora_"}
_SETTING_PREFIX.update(adapter="adapter_", prompt="prompt_")


def make_optimizer(
    model: nn.Module, device_semantics: str = "cuda", lr: float = 3e-4, optimizer: str = "adamw"
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, with the ``foreach`` choice of the given device (see predict.py);
    ``optimizer="adamw8bit"``: bitsandbytes' 8-bit AdamW state, emulated (:class:`.storage.EmulatedAdamW8bit`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw8bit":
        return EmulatedAdamW8bit(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=device_semantics == "cuda")


def training_step(
    model: nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float = 1.0,
    autocast_dtype: torch.dtype | None = None,
):
    """One iteration as the paper trains (lst-reference §4): loss, backward, clip at 1.0, AdamW, drop the grads.

    ``autocast_dtype``: run the forward under ``torch.autocast`` in it (``--precision bf16|fp16``; the master
    weights and optimizer state stay float32). fp16's gradient scaler is not traced: it scales the loss and
    unscales the gradients in place, allocating only scalars.
    """
    context = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with context:
        loss = model(**batch).loss
    loss.backward()
    del loss
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def default_head(config) -> str:
    """``seq2seq_lm`` for encoder-decoders, ``sequence_classification`` for BERT-like encoders, else ``causal_lm``."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq_lm"
    return "sequence_classification" if config.model_type in ENCODER_ONLY else "causal_lm"


def make_batch(config, head: str, batch_size: int, source_length: int, target_length: int) -> dict:
    """A full-length batch (no padding: the longest batch sets the peak) with the head's labels."""
    hi = max(3, config.vocab_size)
    ids = torch.randint(2, hi, (batch_size, source_length))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if head == "seq2seq_lm":
        batch["labels"] = torch.randint(2, hi, (batch_size, target_length))
    elif head == "causal_lm":
        batch["labels"] = ids
    else:
        batch["labels"] = torch.randint(0, max(1, getattr(config, "num_labels", 2)), (batch_size,))
    return batch


def check_options(
    method: str, head: str, backbone_dtype: str | None, attn: str, precision: str, optimizer: str = "adamw"
) -> None:
    """One-line ConfigErrors for unknown or impossible choices."""
    for name, value, choices in (
        ("method", method, METHODS),
        ("head", head, HEADS),
        ("attn", attn, ATTN),
        ("precision", precision, tuple(PRECISIONS)),
        ("optimizer", optimizer, OPTIMIZERS),
    ):
        if value not in choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    if backbone_dtype is not None and backbone_dtype not in BACKBONE_DTYPES:
        raise ConfigError(
            f"unknown backbone_dtype {backbone_dtype!r}; choose one of {', '.join(BACKBONE_DTYPES)}"
        )
    if method == "qlora" and backbone_dtype not in (None, "nf4"):
        raise ConfigError(
            f"qlora trains on an nf4 backbone; backbone_dtype {backbone_dtype!r} does not apply"
        )
    if method not in ("lst", "qlora") and backbone_dtype in ("int8", "nf4"):
        raise ConfigError(
            f"backbone_dtype {backbone_dtype} applies to LST and qlora (a frozen backbone); method {method!r} "
            f"trains its backbone"
        )


def build_training_model(
    config,
    method: str,
    head: str,
    *,
    reduction_factor: int = 8,
    side_layers: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    baseline_config=None,
    backbone_dtype: str | None = None,
    attn: str = "sdpa",
    loss_chunk_size: int | None = None,
    gradient_checkpointing: bool = True,
    precision: str = "fp32",
    side_checkpointing: bool = False,
) -> tuple[nn.Module, dict]:
    """The model a method trains, built from a config (random weights; works under FakeTensorMode).

    Args:
        dtype: the dtype the backbone is built in (baselines train it in this dtype; LST then stores it in
            ``backbone_dtype``).
        backbone_dtype: LST's frozen backbone storage (``float32``... ``nf4``); QLoRA is always nf4.
        attn: attention kernel of the backbone and of LST's side trunk (``sdpa`` as transformers loads models).
        loss_chunk_size: LST's chunked LM loss.
        gradient_checkpointing: QLoRA only (``prepare_model_for_kbit_training``'s default: on).
        precision: the autocast dtype QLoRA's 4-bit layers compute in (bf16 unless fp16).
        side_checkpointing: LST's activation checkpointing of the side layers (the real recomputing wrapper runs
            in the trace, so what it saves for the backward is what the trace sees).

    Returns:
        (model in train mode, the method's settings as a dict).
    """
    import transformers

    check_options(method, head, backbone_dtype, attn, precision)
    auto = {
        "seq2seq_lm": transformers.AutoModelForSeq2SeqLM,
        "causal_lm": transformers.AutoModelForCausalLM,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
    }[head]
    compute = torch.float16 if precision == "fp16" else torch.bfloat16  # bitsandbytes' compute dtype
    build_dtype = compute if method == "qlora" else dtype  # QLoRA loads its backbone in 16 bits
    try:
        backbone = auto.from_config(config, attn_implementation=attn, dtype=build_dtype)
    except ValueError as e:  # transformers: this config has no such head
        raise ConfigError(f"{config.model_type} has no {head} head: {str(e).splitlines()[0]}") from None
    skip = {id(backbone.get_output_embeddings())}  # the LM head stays unquantized (convert_backbone's rule)
    if method == "lst":
        storage = backbone_dtype if backbone_dtype in FLOAT_STORAGE else None
        ladder = LadderConfig(
            reduction_factor=reduction_factor,
            side_layers=side_layers,
            init="random",
            backbone_dtype=storage,
            attn_implementation=attn,
            loss_chunk_size=loss_chunk_size,
            side_checkpointing=side_checkpointing,
        )
        model = get_ladder_model(backbone, ladder)
        if backbone_dtype in ("int8", "nf4"):  # the rest in the compute dtype, as convert_backbone on CUDA
            emulate_quantized_linears(model.backbone.to(compute), backbone_dtype, skip, compute)
        settings = {
            "reduction_factor": reduction_factor,
            "side_layers": model.side.stacks[next(iter(model.side.stacks))].kept,
            "backbone_dropout": ladder.backbone_dropout,
            "loss_chunk_size": loss_chunk_size,
            "side_checkpointing": side_checkpointing,
        }
    elif method == "qlora":
        emulate_quantized_linears(backbone, "nf4", skip, compute)
        baseline_config = baseline_config or BaselineConfig(lora_rank=16, lora_alpha=32, lora_dropout=0.05)
        model = prepare_qlora(backbone, baseline_config, gradient_checkpointing=gradient_checkpointing)
        settings = dict(
            _baseline_settings(method, baseline_config), gradient_checkpointing=gradient_checkpointing
        )
    else:
        baseline_config = baseline_config or BaselineConfig()
        if method == "lora" and baseline_config.lora_targets is None and config.model_type not in FAMILIES:
            from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS

            if config.model_type in LORA_TARGETS:
                targets = tuple(LORA_TARGETS[config.model_type])
                baseline_config = replace(baseline_config, lora_targets=targets)
        model = prepare_baseline(backbone, method, baseline_config)
        settings = _baseline_settings(method, baseline_config)
        if method == "lora" and settings["lora_targets"] is None:
            settings["lora_targets"] = list(FAMILIES[config.model_type].lora_targets)
    settings["attn"] = attn
    model.train()
    return model, settings


def _baseline_settings(method: str, config: BaselineConfig) -> dict:
    settings = {k: v for k, v in config.to_dict().items() if k.startswith(_SETTING_PREFIX[method])}
    if method == "qlora" and settings["lora_targets"] is None:
        settings["lora_targets"] = "all-linear"
    return settings
