"""Predict the peak memory of a training iteration for any backbone size and method, without weights or a GPU.

The model is built under ``FakeTensorMode`` (tensors with shapes and dtypes but no data), then two training
iterations run (forward, backward, gradient clipping, AdamW step, ``zero_grad(set_to_none=True)``) under a
MemTracker (``torch.distributed._tools.mem_tracker``, torch's private API, checked by :mod:`.mem_tracker_compat`)
that counts every tensor storage alive. The first iteration creates the optimizer state; the second is the steady state and is what we report,
as a GPU's ``max_memory_allocated`` read over training steps after a warm-up step would. Each iteration has its
own tracker (one MemTracker traces one iteration). AdamW is torch's fused kernel, as laddertune's trainer runs it on
CUDA and CPU (no parameter-sized temporaries at the step).

The peak Total is exact for the ops traced; the split into categories at the peak is MemTracker's: parameters,
gradients, optimizer state and inputs are exact, "activations" is everything else alive (saved tensors, the
backward's temporaries), with the ladder taps counted apart for LST.

``device_semantics="cuda"`` predicts a GPU run from a CPU trace (fake CUDA tensors abort on a CPU-only build):

- dropout saves a bool mask on CUDA (``native_dropout``) but a float noise tensor on CPU (outside LST's side
  trunk, whose CPU masks :mod:`laddertune.core.cpu_dropout` draws and keeps as bools); ``F.dropout`` is routed
  through ``aten.native_dropout`` during the trace (T5-base at batch 100: -16%), and the side trunk's dropout with
  it;
- every block is rounded up to 512 bytes, as the CUDA caching allocator does;
- ``attn="sdpa"`` runs the aten kernel CUDA would pick, flash or memory-efficient, so that autograd keeps what
  that kernel keeps (out + logsumexp, not the (B, H, T, T) probabilities): :mod:`.attention`.

The trace's batches are unpadded; transformers cannot read a fake ``attention_mask``, so its test for dropping an
all-ones mask (then SDPA runs ``is_causal`` / unmasked, as on real data) is told the mask is all ones
(``trace_emulation.no_padding_masks``, both semantics). BART's own classifier gathers its ``</s>`` tokens with a
boolean mask, which needs token values: during the trace it gathers the last ``</s>`` by index instead, the same
rows and the same memory (``trace_emulation.traceable_eos_pooling``).

Precision and storage (both semantics): ``precision="bf16"|"fp16"`` runs the forward under ``torch.autocast``
(float32 master weights and AdamW state, compute-dtype activations; the trace's autocast is CPU's, whose
lower-precision list holds the same matmul/linear/SDPA ops as CUDA's; CUDA's float32 list (layer_norm, softmax...)
is not applied, and the models here upcast their norms and softmax themselves). ``backbone_dtype`` stores LST's
frozen backbone in a float dtype, or as bitsandbytes' int8/nf4 linears (:mod:`.storage`: storage exact, the
dequantized weight a transient of each matmul). ``method="qlora"``: PEFT LoRA on an nf4 backbone prepared by
``prepare_model_for_kbit_training`` (:mod:`laddertune.methods.qlora`). The chunked LM loss is LST's own
(``loss_chunk_size``).

Step FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over a third iteration, traced apart from the memory
(its module hooks keep the graph of a checkpointed recomputation alive): matmuls, convolutions and attention
kernels, forward + backward (+ recomputation under gradient checkpointing); elementwise ops, the optimizer and
dequantization count zero.

Not modelled: the cuBLAS/cuDNN workspaces, the CUDA context, the allocator's cache (``max_memory_reserved``) and
kernels whose CUDA implementation allocates differently from the CPU one. The CUDA prediction has NOT yet been
validated on a GPU; the CPU prediction is checked against a real CPU run in tests/test_memory.py (within 2%,
float32 with eager and SDPA attention, and bf16 autocast with a bf16 backbone: tests/test_memory_precision.py).
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

from ..core.config import BACKBONE_DTYPES
from ..errors import ConfigError
from ..methods import method_spec
from .attention import cuda_sdpa
from .mem_tracker_compat import mem_tracker_class
from .model_configs import load_config, position_limit
from .storage import EmulatedQuantLinear
from .trace_emulation import (
    CUDA_BLOCK,
    cuda_block_rounding,
    cuda_dropout,
    fake_friendly_modules,
    no_layerdrop_draws,
    no_padding_masks,
    tap_hooks,
    traceable_eos_pooling,
)
from .training_model import (  # noqa: F401  (re-exported: tests and benchmarks import them from here)
    FLOAT_STORAGE,
    HEADS,
    PRECISIONS,
    build_training_model,
    check_options,
    default_head,
    make_batch,
    make_optimizer,
    training_step,
)
from .training_model import method_options as resolve_options
from .vision_model import (
    PAPER_VL_OPTIONS,
    VL_BACKBONES,
    VisualInput,
    build_vl_training_model,
    check_vl_options,
    make_vl_batch,
)

logger = logging.getLogger(__name__)

DEVICE_SEMANTICS = ("cuda", "cpu")
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
    """The frozen backbone's storage for LST and QLoRA (``nf4``...), else the dtype the backbone trains in."""
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
    precision: str = "fp32"
    """``fp32``, or the autocast dtype of the forward (``bf16``, ``fp16``)."""
    step_flops: int = 0
    """FLOPs of one training iteration (FlopCounterMode on the traced iteration; see the module docstring)."""
    torch_version: str = torch.__version__
    trace_seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict, with ``peak_gib`` and ``floor_gib`` added for readers."""
        out = asdict(self)
        out["peak_gib"] = round(self.peak_bytes / 1024**3, 4)
        out["floor_gib"] = round(self.floor_bytes / 1024**3, 4)
        return out


def _category(snap: dict, name: str) -> int:
    return sum(v for k, v in snap.items() if getattr(k, "name", None) == name)


def _check_positions(config, head: str, source_length: int, target_length: int) -> None:
    """A backbone with a learned position table cannot run longer sequences (a real run fails with an index
    error; the fake-tensor trace would fail with a traceback, or worse, not at all): one line instead."""
    limit = position_limit(config)
    lengths = {"source_length": source_length, "target_length": target_length if head == "seq2seq_lm" else 0}
    for name, value in lengths.items():
        if limit is not None and value > limit:
            backbone = getattr(config, "_name_or_path", "") or config.model_type
            raise ConfigError(
                f"{name} {value} is longer than backbone {backbone!r} can read: its position table holds {limit} "
                "positions"
            )


# -- the prediction ---------------------------------------------------------------------------------------------------
def predict_memory(
    backbone_config,
    method: str = "lst",
    *,
    batch_size: int = 100,
    source_length: int = 128,
    target_length: int = 3,
    head: str | None = None,
    dtype: torch.dtype = torch.float32,
    backbone_dtype: str | None = None,
    precision: str = "fp32",
    attn: str = "sdpa",
    optimizer: str = "adamw",
    device_semantics: str = "cuda",
    visual: VisualInput | None = None,
    options=None,
    count_flops: bool = True,
    **method_options,
) -> MemoryPrediction:
    """Predict the peak memory of a steady-state training iteration, without weights or a GPU.

    Args:
        backbone_config: a transformers config, or a name for :func:`laddertune.memory.model_configs.load_config`.
        method: a method's name (:func:`laddertune.methods.method_names`).
        batch_size: examples per step (the paper's Table 1: 100; CLIP-T5: each task's batch).
        source_length: input tokens per example, no padding (the paper's 128).
        target_length: label tokens per example, seq2seq heads only (the paper's 3).
        head: ``seq2seq_lm``, ``causal_lm`` or ``sequence_classification``; default from the config.
        dtype: the backbone's parameter dtype (kept for old callers; ``backbone_dtype`` names it too).
        backbone_dtype: ``float32|bfloat16|float16|int8|nf4``: the frozen backbone's storage for methods that
            have one (LST: int8/nf4 as bitsandbytes stores them; QLoRA is nf4); for a baseline a float dtype is the
            dtype it trains its backbone in.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; float32 master weights and optimizer state).
        attn: ``sdpa`` (CUDA's flash/memory-efficient kernels under CUDA semantics) or ``eager``: the backbone's
            kernel, and the side network's unless the options name another.
        optimizer: ``adamw`` (torch's, float32 moments) or ``adamw8bit`` (bitsandbytes' 8-bit state, emulated).
        device_semantics: ``"cuda"`` predicts a GPU's ``max_memory_allocated``; ``"cpu"`` a CPU run.
        visual: the image part of a CLIP-T5 batch (:mod:`.vision_model`); implied by a ``clip-t5-*`` name.
        count_flops: trace a third iteration to count the step's FLOPs (False: ``step_flops`` is 0, a third faster;
            what ``--fit``'s searches do).
        options: the method's options object (e.g. ``LoraOptions(lora_rank=8)``); or give them as keywords:
        **method_options: options of the method by name (``reduction_factor=4``, ``side_layers=[...]``,
            ``lora_rank=16``, ``gradient_checkpointing=False``...); default: the authors' settings (CLIP-T5: the
            paper's VL ones).

    Raises:
        ConfigError: unknown config, method, option, head, dtype, precision or device semantics, or settings that
            do not fit the backbone.
    """
    if isinstance(backbone_config, str) and backbone_config in VL_BACKBONES:
        name, backbone_config = backbone_config, load_config(VL_BACKBONES[backbone_config])
        backbone_config._name_or_path, visual = name, visual or VisualInput()
    if isinstance(backbone_config, str):
        backbone_config = load_config(backbone_config)
    if device_semantics not in DEVICE_SEMANTICS:
        raise ConfigError(
            f"device_semantics must be one of {', '.join(DEVICE_SEMANTICS)}, got {device_semantics!r}"
        )
    sizes = {"batch_size": batch_size, "source_length": source_length, "target_length": target_length}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    head = head or default_head(backbone_config)
    check_options(head, attn, precision, optimizer)
    _check_positions(backbone_config, head, source_length, target_length)
    if backbone_dtype is not None and backbone_dtype not in BACKBONE_DTYPES:
        raise ConfigError(
            f"unknown backbone_dtype {backbone_dtype!r}; choose one of {', '.join(BACKBONE_DTYPES)}"
        )
    spec = method_spec(method)
    storage = backbone_dtype or str(dtype).removeprefix("torch.")
    names = spec.option_names()
    if options is None and "backbone_dtype" in names:  # the frozen backbone's storage is one of its options
        method_options.setdefault("backbone_dtype", None if storage == "float32" else storage)
    base = PAPER_VL_OPTIONS.get(method) if visual is not None else None
    options = resolve_options(method, attn=attn, options=options, base=base, **method_options)
    storage, dtype = _backbone_storage(spec, options, backbone_dtype, storage, precision)
    if visual is not None:
        check_vl_options(options, head)
    t0 = time.perf_counter()
    build = dict(dtype=dtype, attn=attn, precision=precision, visual=visual, optimizer=optimizer)
    model, settings, trackers, flops = _trace_iterations(
        backbone_config, options, head, sizes, device_semantics, build, count_flops
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
        dtype=storage,
        device_semantics=device_semantics,
        peak_bytes=sum(breakdown.values()),
        breakdown=breakdown,
        floor_bytes=floor,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params) + _packed_params(model),
        first_iteration_peak_bytes=first._peak_mem.get(_CPU, 0),
        settings=settings,
        precision=precision,
        step_flops=flops,
        trace_seconds=round(time.perf_counter() - t0, 2),
    )
    logger.info(
        "predicted %s %s: peak %.3f GiB", prediction.backbone, method, prediction.peak_bytes / 1024**3
    )
    return prediction


def _backbone_storage(
    spec, options, asked: str | None, storage: str, precision: str
) -> tuple[str, torch.dtype]:
    """(the backbone's storage as reported, the dtype it is built in) for the method of ``options``."""
    if "backbone_dtype" in spec.option_names():  # a frozen backbone: stored as its options say, built float32
        return options.backbone_dtype or "float32", torch.float32
    if spec.backbone_storage is not None:  # the method fixes its backbone's storage (QLoRA: nf4)
        if asked not in (None, spec.backbone_storage):
            raise ConfigError(
                f"{spec.name} trains on an {spec.backbone_storage} backbone; backbone_dtype {asked!r} does not apply"
            )
        return (
            spec.backbone_storage,
            torch.float16 if precision == "fp16" else torch.bfloat16,
        )  # then quantized
    if storage not in FLOAT_STORAGE:
        raise ConfigError(
            f"backbone_dtype {storage} applies to a frozen backbone (LST, qlora); method {spec.name!r} trains its "
            f"backbone"
        )
    return storage, FLOAT_STORAGE[storage]  # a baseline trains its backbone in this float dtype


_CPU = torch.device("cpu")  # fake tensors live on "cpu"; CUDA is emulated (see the module docstring)


def _trace_iterations(
    config, options, head: str, sizes: dict, device_semantics: str, build: dict, count_flops: bool = True
):
    """Build the model under FakeTensorMode and trace two training iterations, one tracker each; then count the
    FLOPs of a third."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        FakeTensorMode,
    )
    from torch.utils.flop_counter import FlopCounterMode

    Tracker = mem_tracker_class()
    autocast = PRECISIONS[build["precision"]]
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # MemTracker warns for every module gone before its backward hook
        stack.enter_context(FakeTensorMode())
        stack.enter_context(fake_friendly_modules())
        stack.enter_context(no_padding_masks())
        stack.enter_context(traceable_eos_pooling())
        visual, optimizer_name = build.pop("visual"), build.pop("optimizer")
        if visual is None:
            model, settings = build_training_model(config, options, head, **build)
            batch = make_batch(config, head, **sizes)
        else:  # CLIP-T5 (the paper's Table 3)
            model, settings = build_vl_training_model(config, options, visual, **build)
            batch = make_vl_batch(config, visual, **sizes)
        settings["optimizer"] = optimizer_name
        stack.enter_context(no_layerdrop_draws(model))
        optimizer = make_optimizer(model, device_semantics, optimizer=optimizer_name)
        if device_semantics == "cuda":
            stack.enter_context(cuda_dropout())
            stack.enter_context(cuda_block_rounding())
            if build["attn"] == "sdpa":
                stack.enter_context(cuda_sdpa())
        trackers: list = []
        for handle in tap_hooks(model, lambda tensors: trackers[-1].add_taps(tensors)):
            stack.callback(handle.remove)
        for i in range(3 if count_flops else 2):
            # two tracked iterations, then one that counts FLOPs: FlopCounterMode's module hooks, run during the
            # recomputation of activation checkpointing, keep the recomputed graph alive until the iteration ends
            # (measured on real tensors too: 374 MiB against 196 MiB without it), so it never runs beside a tracker
            if i < 2:  # created and entered INSIDE the fake mode: entered outside, it counts nothing
                trackers.append(Tracker())
                trackers[-1].track_external(model, optimizer, batch)
            counter = FlopCounterMode(display=False) if i == 2 else trackers[-1]
            try:
                with counter:
                    training_step(model, batch, optimizer, autocast_dtype=autocast)
            except (DataDependentOutputException, DynamicOutputShapeException) as e:
                # a forward that branches on token values (BART's classifier is made traceable above)
                raise ConfigError(
                    f"cannot predict {config.model_type} with a {head} head: its forward depends on token values "
                    f"({getattr(e, 'func', e)}), which a trace without data cannot follow"
                ) from None
            if i == 1:
                trackers[-1].final_optimizer_bytes = _category(
                    trackers[-1].get_tracker_snapshot().get(_CPU, {}), "OPT"
                )
    return model, settings, trackers, counter.get_total_flops() if count_flops else 0


def _packed_params(model: nn.Module) -> int:
    """Weights an int8/nf4 layer stores packed count as their full out x in values."""
    layers = [m for m in model.modules() if isinstance(m, EmulatedQuantLinear)]
    return sum(m.in_features * m.out_features - m.weight.numel() for m in layers)


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
