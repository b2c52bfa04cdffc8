"""Predict the peak memory of a training iteration for any backbone size and method, without weights or a GPU.

The model is built under ``FakeTensorMode`` (tensors with shapes and dtypes but no data), then two training
iterations run (forward, backward, gradient clipping, AdamW step, ``zero_grad(set_to_none=True)``) under a
MemTracker (``torch.distributed._tools.mem_tracker``, private API of torch 2.13) that counts every tensor storage
alive. The first iteration creates the optimizer state; the second is the steady state and is what we report,
as a GPU's ``max_memory_allocated`` read over training steps after a warm-up step would. Each iteration has its
own tracker (one MemTracker traces one iteration).

The peak Total is exact for the ops traced; the split into categories at the peak is MemTracker's: parameters,
gradients, optimizer state and inputs are exact, "activations" is everything else alive (saved tensors, the
backward's temporaries), with the ladder taps counted apart for LST.

``device_semantics="cuda"`` predicts a GPU run from a CPU trace (fake CUDA tensors abort on a CPU-only build):

- dropout saves a bool mask on CUDA (``native_dropout``) but a float noise tensor on CPU; ``F.dropout`` is routed
  through ``aten.native_dropout`` during the trace (T5-base at batch 100: -16%);
- every block is rounded up to 512 bytes, as the CUDA caching allocator does;
- AdamW uses ``foreach=True`` (CUDA's default; CPU's default is the per-tensor loop, used for ``"cpu"``).

Not modelled: the cuBLAS/cuDNN workspaces, the CUDA context, the allocator's cache (``max_memory_reserved``) and
kernels whose CUDA implementation allocates differently from the CPU one. The CUDA prediction has NOT yet been
validated on a GPU; the CPU prediction is checked against a real CPU run in tests/test_memory.py (within 2%).
Attention runs "eager" in both the trace and any run it is compared to: SDPA backends differ in memory.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..baselines import FAMILIES, BaselineConfig, prepare_baseline
from ..core import LadderConfig, get_ladder_model
from ..errors import ConfigError
from .meter import mem_tracker_class
from .model_configs import load_config
from .trace_emulation import CUDA_BLOCK, cuda_block_rounding, cuda_dropout, fake_friendly_modules, tap_hooks

logger = logging.getLogger(__name__)

METHODS = ("full", "lora", "adapter", "bitfit", "prompt", "lst")
DEVICE_SEMANTICS = ("cuda", "cpu")
HEADS = ("seq2seq_lm", "causal_lm", "sequence_classification")
ENCODER_ONLY = set("bert roberta distilbert albert electra deberta deberta-v2 xlm-roberta mpnet".split())
# what MemoryPrediction.breakdown splits the peak into (they sum to the peak)
BREAKDOWN_KEYS = tuple(
    "frozen_weights trainable_weights gradients optimizer_state ladder_taps activations inputs".split()
)


@dataclass
class MemoryPrediction:
    """The predicted peak of one steady-state training iteration (bytes)."""

    backbone: str
    method: str
    head: str
    batch_size: int
    source_length: int
    target_length: int
    dtype: str
    device_semantics: str
    peak_bytes: int
    """Peak of live tensor bytes during the second training iteration."""
    breakdown: dict[str, int]
    """What was alive at the peak, by :data:`BREAKDOWN_KEYS`; sums to ``peak_bytes``. ``frozen_weights`` includes
    buffers; ``optimizer_state`` includes the optimizer step's temporaries when the peak is in the step;
    ``activations`` is every other forward/backward tensor (saved for backward, temporaries, gradients of
    activations); ``inputs`` is the batch."""
    floor_bytes: int
    """frozen weights + all ladder taps + trainable weights, their gradients and the optimizer state: what any
    iteration holds at once, however its activations are scheduled."""
    trainable_params: int
    total_params: int
    first_iteration_peak_bytes: int
    """Peak of the first iteration (no optimizer state yet while forward and backward run)."""
    settings: dict = field(default_factory=dict)
    """Method settings used (LoRA rank and targets, side layers, reduction factor...)."""
    torch_version: str = torch.__version__
    trace_seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict, with ``peak_gib`` and ``floor_gib`` added for readers."""
        out = asdict(self)
        out["peak_gib"] = round(self.peak_bytes / 1024**3, 4)
        out["floor_gib"] = round(self.floor_bytes / 1024**3, 4)
        return out


# -- the training iteration (shared by the prediction and the real runs it is checked against) ----------------------
def make_optimizer(
    model: nn.Module, device_semantics: str = "cuda", lr: float = 3e-4
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, with the ``foreach`` choice of the given device (see module doc)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=device_semantics == "cuda")


def training_step(
    model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, max_grad_norm: float = 1.0
):
    """One iteration as the paper trains (lst-reference §4): loss, backward, clip at 1.0, AdamW, drop the grads."""
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


def build_training_model(
    config,
    method: str,
    head: str,
    *,
    reduction_factor: int = 8,
    side_layers: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    baseline_config=None,
) -> tuple[nn.Module, dict]:
    """The model a method trains, built from a config (random weights; works under FakeTensorMode).

    Returns:
        (model in train mode, the method's settings as a dict).
    """
    import transformers

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    auto = {
        "seq2seq_lm": transformers.AutoModelForSeq2SeqLM,
        "causal_lm": transformers.AutoModelForCausalLM,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
    }[head]
    try:
        backbone = auto.from_config(config, attn_implementation="eager", dtype=dtype)
    except ValueError as e:  # transformers: this config has no such head
        raise ConfigError(f"{config.model_type} has no {head} head: {str(e).splitlines()[0]}") from None
    if method == "lst":
        ladder = LadderConfig(reduction_factor=reduction_factor, side_layers=side_layers, init="random")
        model = get_ladder_model(backbone, ladder)
        settings = {
            "reduction_factor": reduction_factor,
            "side_layers": model.side.stacks[next(iter(model.side.stacks))].kept,
            "backbone_dropout": ladder.backbone_dropout,
        }
    else:
        baseline_config = baseline_config or BaselineConfig()
        if method == "lora" and baseline_config.lora_targets is None and config.model_type not in FAMILIES:
            from dataclasses import replace

            from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS

            if config.model_type in LORA_TARGETS:
                baseline_config = replace(
                    baseline_config, lora_targets=tuple(LORA_TARGETS[config.model_type])
                )
        model = prepare_baseline(backbone, method, baseline_config)
        settings = {
            k: v for k, v in baseline_config.to_dict().items() if k.startswith(_SETTING_PREFIX[method])
        }
        if method == "lora" and settings["lora_targets"] is None:
            settings["lora_targets"] = list(FAMILIES[config.model_type].lora_targets)
    model.train()
    return model, settings


# which BaselineConfig fields each method reports as its settings
_SETTING_PREFIX = {
    "full": "freeze",
    "bitfit": "freeze",
    "lora": "lora_",
    "adapter": "adapter_",
    "prompt": "prompt_",
}


def _category(snap: dict, name: str) -> int:
    return sum(v for k, v in snap.items() if getattr(k, "name", None) == name)


# -- the prediction ---------------------------------------------------------------------------------------------------
def predict_memory(
    backbone_config,
    method: str,
    *,
    batch_size: int,
    source_length: int,
    target_length: int,
    reduction_factor: int = 8,
    side_layers: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    device_semantics: str = "cuda",
    head: str | None = None,
    baseline_config=None,
) -> MemoryPrediction:
    """Predict the peak memory of a steady-state training iteration, without weights or a GPU.

    Args:
        backbone_config: a transformers config, or a name for :func:`laddertune.memory.model_configs.load_config`.
        method: one of :data:`METHODS`.
        batch_size: examples per step.
        source_length: input tokens per example (no padding).
        target_length: label tokens per example (seq2seq heads; ignored otherwise).
        reduction_factor: LST's r.
        side_layers: LST's kept layers (None: all).
        dtype: the backbone's parameter dtype.
        device_semantics: ``"cuda"`` predicts a GPU's ``max_memory_allocated``; ``"cpu"`` a CPU run.
        head: ``seq2seq_lm``, ``causal_lm`` or ``sequence_classification``; default from the config.
        baseline_config: :class:`laddertune.baselines.BaselineConfig` (default: the authors' settings,
            LoRA r=32, alpha 32, dropout 0.1 on q and v).

    Raises:
        ConfigError: unknown config, method, head or device semantics, or settings that do not fit the backbone.
    """
    if isinstance(backbone_config, str):
        backbone_config = load_config(backbone_config)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if device_semantics not in DEVICE_SEMANTICS:
        raise ConfigError(
            f"device_semantics must be one of {', '.join(DEVICE_SEMANTICS)}, got {device_semantics!r}"
        )
    sizes = {"batch_size": batch_size, "source_length": source_length, "target_length": target_length}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    head = head or default_head(backbone_config)
    t0 = time.perf_counter()
    build = {"reduction_factor": reduction_factor, "side_layers": side_layers, "dtype": dtype}
    model, settings, trackers = _trace_two_iterations(
        backbone_config, method, head, sizes, device_semantics, dict(build, baseline_config=baseline_config)
    )
    first, tracker = trackers
    breakdown, floor = _account(model, tracker, cuda=device_semantics == "cuda")
    params = {id(p): p for p in model.parameters()}.values()
    prediction = MemoryPrediction(
        backbone=getattr(backbone_config, "_name_or_path", "") or backbone_config.model_type,
        method=method,
        head=head,
        batch_size=batch_size,
        source_length=source_length,
        target_length=target_length if head == "seq2seq_lm" else 0,
        dtype=str(dtype).removeprefix("torch."),
        device_semantics=device_semantics,
        peak_bytes=sum(breakdown.values()),
        breakdown=breakdown,
        floor_bytes=floor,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params),
        first_iteration_peak_bytes=first._peak_mem.get(_CPU, 0),
        settings=settings,
        trace_seconds=round(time.perf_counter() - t0, 2),
    )
    logger.info(
        "predicted %s %s: peak %.3f GiB", prediction.backbone, method, prediction.peak_bytes / 1024**3
    )
    return prediction


_CPU = torch.device("cpu")  # fake tensors live on "cpu"; CUDA is emulated (see the module docstring)


def _trace_two_iterations(config, method: str, head: str, sizes: dict, device_semantics: str, build: dict):
    """Build the model under FakeTensorMode and trace two training iterations, one tracker each."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        FakeTensorMode,
    )

    Tracker = mem_tracker_class()
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # MemTracker warns for every module gone before its backward hook
        stack.enter_context(FakeTensorMode())
        stack.enter_context(fake_friendly_modules())
        model, settings = build_training_model(config, method, head, **build)
        optimizer = make_optimizer(model, device_semantics)
        batch = make_batch(config, head, **sizes)
        if device_semantics == "cuda":
            stack.enter_context(cuda_dropout())
            stack.enter_context(cuda_block_rounding())
        trackers: list = []
        for handle in tap_hooks(model, lambda tensors: trackers[-1].add_taps(tensors)):
            stack.callback(handle.remove)
        for _ in range(2):
            # created and entered INSIDE the fake mode: entered outside, it counts nothing
            trackers.append(Tracker())
            trackers[-1].track_external(model, optimizer, batch)
            try:
                with trackers[-1]:
                    training_step(model, batch, optimizer)
            except (DataDependentOutputException, DynamicOutputShapeException) as e:
                # e.g. BART's classification head checks the number of <eos> tokens per row
                raise ConfigError(
                    f"cannot predict {config.model_type} with a {head} head: its forward depends on token values "
                    f"({getattr(e, 'func', e)}), which a trace without data cannot follow"
                ) from None
        trackers[-1].final_optimizer_bytes = _category(
            trackers[-1].get_tracker_snapshot().get(_CPU, {}), "OPT"
        )
    return model, settings, trackers


def _account(model: nn.Module, tracker, *, cuda: bool) -> tuple[dict[str, int], int]:
    """(breakdown at the peak, floor) from the second iteration's tracker."""
    peak = tracker._peak_mem_snap.get(_CPU, {})
    sizes = {id(p): p.untyped_storage().nbytes() for p in model.parameters() if p.requires_grad}
    trainable = sum(math.ceil(n / CUDA_BLOCK) * CUDA_BLOCK if cuda else n for n in sizes.values())
    taps = tracker.taps_at_peak
    breakdown = {
        "frozen_weights": _category(peak, "PARAM") + _category(peak, "BUFFER") - trainable,
        "trainable_weights": trainable,
        "gradients": _category(peak, "GRAD"),
        "optimizer_state": _category(peak, "OPT"),
        "ladder_taps": taps,
        "activations": _category(peak, "ACT") + _category(peak, "TEMP") - taps,
        "inputs": _category(peak, "OTH"),
    }
    total = tracker._peak_mem.get(_CPU, 0)
    assert sum(breakdown.values()) == total, (breakdown, total)  # MemTracker's categories partition its Total
    # weights, all ladder taps (alive together at the end of the forward), gradients, optimizer state after a step
    floor = (
        breakdown["frozen_weights"] + tracker.all_taps_bytes + 2 * trainable + tracker.final_optimizer_bytes
    )
    return breakdown, floor
