"""The model, batch, optimizer and iteration the memory predictor traces (and the real runs it is checked against).

:func:`build_training_model` builds what a method trains from a config (random weights; it also runs under
``FakeTensorMode``): LST around a frozen backbone stored in ``backbone_dtype``, a baseline of
:mod:`laddertune.baselines`, or QLoRA (:func:`laddertune.baselines.prepare_qlora` on an nf4 backbone).
int8/nf4 backbones are bitsandbytes' storage emulated by :mod:`.storage` (the predictor cannot run its kernels);
real CPU runs use float backbones only.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..core.compute import FUSED_ADAMW, OPTIMIZERS
from ..core.compute import PRECISIONS as PRECISION_NAMES
from ..core.config import ATTN_IMPLEMENTATIONS, HEADS
from ..errors import ConfigError
from ..methods import get_method, method_spec
from .storage import EmulatedAdamW8bit, emulate_quantized_embeddings, emulate_quantized_linears

PRECISIONS = dict(
    zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16), strict=True)
)  # the autocast dtypes
FLOAT_STORAGE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ENCODER_ONLY = set("bert roberta distilbert albert electra deberta deberta-v2 xlm-roberta mpnet".split())


def make_optimizer(
    model: nn.Module, device_semantics: str = "cuda", lr: float = 3e-4, optimizer: str = "adamw"
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters as laddertune's trainer makes it on that device (see predict.py): the
    fused kernel on CUDA and CPU; ``optimizer="adamw8bit"``: bitsandbytes' 8-bit AdamW state,
    emulated (:class:`.storage.EmulatedAdamW8bit`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw8bit":
        return EmulatedAdamW8bit(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=device_semantics in FUSED_ADAMW or None)


def training_step(
    model: nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float = 1.0,
    autocast_dtype: torch.dtype | None = None,
):
    """One iteration as the paper trains (docs/concepts.md#fact-training-settings): loss, backward, clip at 1.0, AdamW, drop the grads.

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


def check_options(head: str, attn: str, precision: str, optimizer: str = "adamw") -> None:
    """One-line ConfigErrors for unknown choices of what the trace runs (the method's options check themselves)."""
    for name, value, choices in (
        ("head", head, HEADS),
        ("attn", attn, ATTN_IMPLEMENTATIONS),
        ("precision", precision, tuple(PRECISIONS)),
        ("optimizer", optimizer, OPTIMIZERS),
    ):
        if value not in choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def method_options(method: str, *, attn: str = "sdpa", options=None, base=None, **values):
    """The options of ``method`` that a prediction traces: ``options`` as given, else the method's defaults (or
    ``base``) with ``values`` (option names) applied; the side network's attention kernel follows ``attn`` unless
    given."""
    spec = method_spec(method)
    if options is not None:
        if values:
            raise ConfigError("give the method's options as an object (options=) or as keywords, not both")
        if options.name != method:
            raise ConfigError(f"options of method {options.name} given for method {method}")
        return options
    if "attn" in spec.option_names():
        values.setdefault("attn", attn)
    return spec.make_options(values, base=base)


def build_training_model(
    config,
    method,
    head: str,
    *,
    dtype: torch.dtype = torch.float32,
    attn: str = "sdpa",
    precision: str = "fp32",
    **method_values,
) -> tuple[nn.Module, dict]:
    """The model a method trains, built from a backbone config (random weights; works under FakeTensorMode).

    Args:
        method: a method's name, with its options as keywords (``side_layers=[...]``, ``lora_rank=8``), or the
            method's options object. The method builds its model
            (:meth:`~laddertune.methods.base.TrainingMethod.build_for_trace`), with int8/nf4 backbone storage
            emulated here (:mod:`.storage`: the predictor cannot run bitsandbytes' kernels).
        dtype: the dtype the backbone is built in (a baseline trains it in this dtype; LST stores it as its
            options' ``backbone_dtype`` says; QLoRA loads it in the compute dtype before quantizing).
        attn: the backbone's attention kernel (``sdpa`` as transformers loads models), and the side network's.
        precision: the autocast dtype the 4-bit layers compute in (bf16 unless fp16).

    Returns:
        (model in train mode, the method's settings as a dict).
    """
    options = method_options(method, attn=attn, **method_values) if isinstance(method, str) else method
    import transformers

    check_options(head, attn, precision)
    auto = {
        "seq2seq_lm": transformers.AutoModelForSeq2SeqLM,
        "causal_lm": transformers.AutoModelForCausalLM,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
    }[head]
    method = get_method(options.name)
    compute = torch.float16 if precision == "fp16" else torch.bfloat16  # bitsandbytes' compute dtype
    try:
        backbone = auto.from_config(config, attn_implementation=attn, dtype=dtype)
    except ValueError as e:  # transformers: this config has no such head
        raise ConfigError(f"{config.model_type} has no {head} head: {str(e).splitlines()[0]}") from None
    head = backbone.get_output_embeddings()

    def quantize(module: nn.Module, storage: str, embeddings: bool = False) -> None:
        """The rest in the compute dtype, as on CUDA; the LM head and input embeddings stay 16-bit unless
        ``embeddings`` (convert_backbone's rule)."""
        module = module.to(compute)
        emulate_quantized_linears(module, storage, set() if embeddings else {id(head)}, compute)
        if embeddings:
            emulate_quantized_embeddings(module, storage, compute)

    model = method.build_for_trace(backbone, options, quantize)
    settings = {**method.trace_settings(options, model), "attn": attn}
    model.train()
    return model, settings
