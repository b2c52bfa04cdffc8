"""``laddertune memory``: predict the training memory of a backbone and method, without weights or a GPU.

Example (the paper's Table 1 setting is the default: batch 100, source 128 tokens, target 3 tokens)::

    laddertune memory --backbone t5-base --method lst --side-layers paper
    laddertune memory --backbone llama-7b --method lora --batch-size 4 --source-length 512 --json
    laddertune memory --backbone llama-7b --backbone-dtype nf4 --precision bf16 --batch-size 4 --source-length 2048
    laddertune memory --backbone llama-7b --method qlora --lora-rank 16 --precision bf16 --batch-size 4 \
        --source-length 2048 [--no-gradient-checkpointing]
    laddertune memory --backbone clip-t5-base --method lst     # Table 3: the authors' four task batches, the peak

CLIP-T5 (``clip-t5-base``, or any T5 with ``--vl-task``) runs each task's batch of the authors' multi-task setting
(:mod:`laddertune.memory.vision_model`; ``--batch-size`` and the lengths override it) and reports the largest:
one batch holds one task, so that is the run's peak. ``--json`` then prints ``{"tasks": {task: prediction},
"peak_task", "peak_bytes", "peak_gib"}``.

``--json`` prints :meth:`laddertune.memory.predict.MemoryPrediction.to_dict` as one JSON object:
``backbone``, ``method``, ``head``, ``batch_size``, ``source_length``, ``target_length`` (0 unless seq2seq),
``dtype`` (the backbone's storage), ``precision``, ``device_semantics``, ``peak_bytes`` and ``peak_gib`` (peak of a steady-state training iteration),
``breakdown`` (bytes alive at the peak: ``frozen_weights``, ``trainable_weights``, ``gradients``,
``optimizer_state``, ``ladder_taps``, ``activations``, ``inputs``; they sum to ``peak_bytes``), ``floor_bytes``
and ``floor_gib`` (frozen weights + ladder taps + trainable weights, gradients, optimizer state),
``trainable_params``, ``total_params``, ``first_iteration_peak_bytes``, ``settings`` (LoRA rank/targets, side
layers, attn...), ``step_flops`` (FlopCounterMode on the traced iteration), ``torch_version``, ``trace_seconds``.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace

from ..errors import ConfigError
from ..memory import PAPER_SIDE_LAYERS, format_gib, load_config, predict_memory
from ..memory.vision_model import PAPER_VL_BATCHES, PAPER_VL_REDUCTION, VL_BACKBONES

DTYPES = ("float32", "bfloat16", "float16", "int8", "nf4")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "memory",
        help="predict training memory for any model size (no weights, no GPU)",
        description=(
            "Predict the peak memory of a training step from a FakeTensor trace of two iterations (forward, "
            "backward, AdamW). Defaults are the paper's Table 1 setting (batch 100, 128 -> 3 tokens)."
        ),
    )
    p.add_argument(
        "--backbone",
        required=True,
        help="t5-base, t5-large, t5-3b, bart-large, llama-7b, clip-t5-base, or a local model folder",
    )
    p.add_argument(
        "--method", default="lst", help="lst, full, lora, adapter, bitfit, prompt or qlora (default lst)"
    )
    p.add_argument(
        "--head",
        default=None,
        help="seq2seq_lm, causal_lm or sequence_classification (default: from the config)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default 100 (CLIP-T5: the task's)")
    p.add_argument("--source-length", type=int, default=None, help="input tokens per example (default 128)")
    p.add_argument(
        "--target-length", type=int, default=None, help="label tokens per example, seq2seq only (default 3)"
    )
    p.add_argument("--reduction-factor", type=int, default=None, help="LST's r (default 8; CLIP-T5 4)")
    p.add_argument(
        "--vl-task",
        default=None,
        help="CLIP-T5: vqa, gqa, nlvr, caption or all (default all for clip-t5-base; makes any T5 a CLIP-T5)",
    )
    p.add_argument("--regions", type=int, default=36, help="CLIP-T5: grid features per image (default 36)")
    p.add_argument(
        "--feature-dim", type=int, default=2048, help="CLIP-T5: feature size (default 2048, RN101)"
    )
    p.add_argument(
        "--side-layers",
        default=None,
        help="LST's kept layers: a comma list of 0-based ids, or 'paper' for the paper's list of t5-base/large/3b "
        "(default: all layers)",
    )
    p.add_argument(
        "--dtype",
        "--backbone-dtype",
        dest="dtype",
        default=None,
        help=f"backbone storage: {', '.join(DTYPES)} (int8/nf4: bitsandbytes' layout; LST and qlora only; "
        "default float32, qlora nf4)",
    )
    p.add_argument(
        "--precision", default="fp32", help="fp32, or autocast in bf16 / fp16 (fp32 master weights)"
    )
    p.add_argument("--attn", default="sdpa", help="sdpa (CUDA flash / memory-efficient kernels) or eager")
    p.add_argument(
        "--loss-chunk-size", type=int, default=None, help="LST: LM loss this many positions at a time"
    )
    p.add_argument(
        "--side-checkpointing", action="store_true", help="LST: recompute the side layers in the backward"
    )
    p.add_argument(
        "--optimizer", default="adamw", help="adamw or adamw8bit (bitsandbytes' 8-bit state, emulated)"
    )
    p.add_argument("--lora-rank", type=int, default=None, help="lora/qlora rank (default 32, qlora 16)")
    p.add_argument(
        "--no-gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_false",
        help="qlora without gradient checkpointing (prepare_model_for_kbit_training's default is on)",
    )
    p.add_argument(
        "--device-semantics",
        default="cuda",
        help="cuda: predict a GPU's max_memory_allocated (bool dropout masks, 512-byte blocks, foreach AdamW); "
        "cpu: predict a CPU run",
    )
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    p.set_defaults(func=run)


def parse_side_layers(value: str | None, backbone: str) -> list[int] | None:
    """``None``, ``"paper"`` or ``"1,2,3"`` -> a list of layer ids (or None for all)."""
    if value is None:
        return None
    if value.strip().lower() == "paper":
        if backbone not in PAPER_SIDE_LAYERS:
            raise ConfigError(
                f"--side-layers paper: the paper has a list for {', '.join(PAPER_SIDE_LAYERS)} only"
            )
        return list(PAPER_SIDE_LAYERS[backbone])
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--side-layers must be 'paper' or comma-separated integers, got {value!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    from ..baselines import BaselineConfig

    if args.dtype is not None and args.dtype not in DTYPES:
        raise ConfigError(f"--backbone-dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    side_layers = parse_side_layers(args.side_layers, args.backbone)
    if side_layers is not None and args.method != "lst":
        raise ConfigError("--side-layers applies to --method lst only")
    baseline_config = None
    if args.lora_rank is not None:
        if args.method not in ("lora", "qlora"):
            raise ConfigError("--lora-rank applies to --method lora and qlora only")
        qlora = {"lora_alpha": 32, "lora_dropout": 0.05} if args.method == "qlora" else {}
        baseline_config = BaselineConfig(lora_rank=args.lora_rank, **qlora)
    options = dict(
        side_layers=side_layers,
        backbone_dtype=args.dtype,
        precision=args.precision,
        attn=args.attn,
        loss_chunk_size=args.loss_chunk_size,
        gradient_checkpointing=args.gradient_checkpointing,
        side_checkpointing=args.side_checkpointing,
        optimizer=args.optimizer,
        baseline_config=baseline_config,
        device_semantics=args.device_semantics,
        head=args.head,
    )
    if args.vl_task is not None or args.backbone in VL_BACKBONES:
        return run_vision(args, options)
    prediction = predict_memory(
        args.backbone,
        args.method,
        batch_size=100 if args.batch_size is None else args.batch_size,
        source_length=128 if args.source_length is None else args.source_length,
        target_length=3 if args.target_length is None else args.target_length,
        reduction_factor=8 if args.reduction_factor is None else args.reduction_factor,
        **options,
    )
    if args.json:
        print(json.dumps(prediction.to_dict(), indent=2))
    else:
        print(format_prediction(prediction))
    return 0


def run_vision(args: argparse.Namespace, options: dict) -> int:
    """CLIP-T5: one prediction per task batch of the authors' setting; the largest is the run's peak."""
    task = args.vl_task or "all"
    if task != "all" and task not in PAPER_VL_BATCHES:
        raise ConfigError(f"--vl-task must be one of {', '.join(PAPER_VL_BATCHES)} or all, got {task!r}")
    backbone = args.backbone
    if backbone in VL_BACKBONES:
        backbone = VL_BACKBONES[backbone]
    config = load_config(backbone)
    config._name_or_path = args.backbone
    predictions = {}
    for name, paper in PAPER_VL_BATCHES.items():
        if task not in ("all", name):
            continue
        visual = replace(paper.visual, regions=args.regions, feature_dim=args.feature_dim)
        predictions[name] = predict_memory(
            copy.deepcopy(config),
            args.method,
            batch_size=paper.batch_size if args.batch_size is None else args.batch_size,
            source_length=paper.source_length if args.source_length is None else args.source_length,
            target_length=paper.target_length if args.target_length is None else args.target_length,
            reduction_factor=PAPER_VL_REDUCTION if args.reduction_factor is None else args.reduction_factor,
            visual=visual,
            **options,
        )
    peak_task = max(predictions, key=lambda t: predictions[t].peak_bytes)
    peak = predictions[peak_task].peak_bytes
    if args.json:
        out = {"tasks": {t: p.to_dict() for t, p in predictions.items()}, "peak_task": peak_task}
        print(json.dumps(out | {"peak_bytes": peak, "peak_gib": round(peak / 1024**3, 4)}, indent=2))
        return 0
    for name, p in predictions.items():
        print(f"[{name}: {p.batch_size} examples x {p.source_length} text tokens + {p.settings['images']} image(s) x "
              f"{p.settings['regions']} regions -> {p.target_length}]")  # fmt: skip
        print(format_prediction(p))
    print(f"CLIP-T5 {args.method} peak over the tasks' batches: {format_gib(peak)} ({peak_task})")
    return 0


def format_prediction(p) -> str:
    """A short human-readable table of a :class:`MemoryPrediction`."""
    settings = ", ".join(f"{k}={_short(v)}" for k, v in p.settings.items())
    shape = f"batch {p.batch_size} x {p.source_length} tokens" + (
        f" -> {p.target_length}" if p.head == "seq2seq_lm" else ""
    )
    over = p.peak_bytes - p.floor_bytes
    lines = [
        f"{p.backbone} {p.method} ({settings}) {p.head}, {shape}, backbone {p.dtype}, precision {p.precision}, "
        f"{p.device_semantics} semantics",
        f"  {'peak (steady-state iteration)':32s}{format_gib(p.peak_bytes):>12s}",
    ]
    lines += [f"    {k.replace('_', ' '):30s}{format_gib(v):>12s}" for k, v in p.breakdown.items() if v]
    lines += [
        f"  {'floor (weights + state + taps)':32s}{format_gib(p.floor_bytes):>12s}",
        f"  {'peak over floor':32s}{format_gib(over):>12s}",
        f"  {'first iteration peak':32s}{format_gib(p.first_iteration_peak_bytes):>12s}",
        f"  trainable {p.trainable_params:,d} of {p.total_params:,d} parameters "
        f"({100 * p.trainable_params / max(1, p.total_params):.3f}%)",
        f"  step FLOPs {p.step_flops:.3e} (FlopCounterMode on the traced iteration)",
    ]
    if p.device_semantics == "cuda":
        lines.append(
            "  (predicted from a CPU trace; the CUDA semantics have not yet been validated on a GPU)"
        )
    return "\n".join(lines)


def _short(v) -> str:
    if isinstance(v, list | tuple):
        return ",".join(map(str, v))
    return str(v)
