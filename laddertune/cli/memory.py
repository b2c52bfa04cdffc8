"""``laddertune memory``: predict the training memory of a backbone and method, without weights or a GPU.

Example (the paper's Table 1 setting is the default: batch 100, source 128 tokens, target 3 tokens)::

    laddertune memory --backbone t5-base --method lst --side-layers paper
    laddertune memory --backbone llama-7b --method lora --batch-size 4 --source-length 512 --json
    laddertune memory --backbone llama-7b --backbone-dtype nf4 --precision bf16 --batch-size 4 --source-length 2048
    laddertune memory --backbone llama-7b --method qlora --lora-rank 16 --precision bf16 --batch-size 4 \
        --source-length 2048 [--no-gradient-checkpointing]
    laddertune memory --backbone clip-t5-base --method lst     # Table 3: the authors' four task batches, the peak
    laddertune memory --backbone llama-3-8b --backbone-dtype nf4 --precision bf16 --fit 12GiB

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
from ..memory.vision_settings import PAPER_VL_BATCHES, VL_BACKBONES, VisualInput
from ..methods.registry import method_names, method_spec
from .flags import Flag, add_flags, add_signature_flags, finish_help, given_options

# what a trace runs with a random init: the pruned initialisation's options have no flag here
NOT_TRACED = ("attn_implementation", "backbone_dtype", "init", "pruning_chain", "fisher_samples")


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
        help="t5-base, t5-large, t5-3b, bart-large, llama-7b, llama-3-8b, llama-2-70b, qwen2.5-7b, clip-t5-base, "
        "or a local model folder",
    )
    p.add_argument(
        "--method", choices=method_names(), default="lst", help="the training method [default: lst]"
    )
    flags: dict[str, Flag] = {}
    skip = ("backbone_config", "method", "dtype", "visual", "options", "count_flops")
    add_signature_flags(p, "laddertune.memory.predict", "predict_memory", flags, skip=skip)
    p.add_argument(
        "--dtype", dest="backbone_dtype", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )  # old name
    methods = p.add_argument_group("method options (each names the methods that take it)")
    for name in method_names():
        add_flags(methods, method_spec(name).options, flags, owner=name, skip=NOT_TRACED)
    vl = p.add_argument_group("CLIP-T5 (the paper's Table 3)")
    vl.add_argument(
        "--vl-task",
        default=None,
        help="CLIP-T5: vqa, gqa, nlvr, caption or all (default all for clip-t5-base; makes any T5 a CLIP-T5)",
    )
    add_flags(vl, VisualInput, flags, skip=("images",))
    p.add_argument(
        "--fit",
        metavar="BUDGET",
        default=None,
        help="what fits BUDGET (12GiB, 800MiB, 24GB), for lst and qlora side by side: the longest context at "
        "--batch-size (default 1) and the largest batch at --source-length (default 2048)",
    )
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    finish_help(p, flags)
    p.set_defaults(func=run, flags=flags)


def run(args: argparse.Namespace) -> int:
    given = given_options(args, args.flags)
    methods = FIT_METHODS if args.fit is not None else (args.method,)
    own = {name for method in methods for name in method_spec(method).option_names()}
    for name in given:
        owners = args.flags[name].owners
        if owners and name not in own:
            raise ConfigError(
                f"--{name.replace('_', '-')} applies to method {', '.join(owners)}, not to {' or '.join(methods)}"
            )
    if isinstance(given.get("side_layers"), str) and given["side_layers"].strip().lower() == "paper":
        given["side_layers"] = paper_side_layers(args.backbone)
    visual = {k: given.pop(k) for k in ("regions", "feature_dim") if k in given}
    if args.vl_task is not None or args.backbone in VL_BACKBONES:
        return run_vision(args, given, visual)
    if args.fit is not None:
        return run_fit(args, given)
    from ..memory import predict_memory

    prediction = predict_memory(args.backbone, args.method, **given)
    print(json.dumps(prediction.to_dict(), indent=2) if args.json else format_prediction(prediction))
    return 0


FIT_METHODS = ("lst", "qlora")


def run_fit(args: argparse.Namespace, given: dict) -> int:
    """``--fit``: for LST and QLoRA, the longest context at a batch size and the largest batch at a length."""
    from ..memory import load_config
    from ..memory.fit import fit_sizes, format_fit, parse_bytes

    budget = parse_bytes(args.fit)
    sizes = {"batch_size": given.pop("batch_size", 1), "source_length": given.pop("source_length", 2048)}
    config = load_config(args.backbone)
    results = []
    for method in FIT_METHODS:
        own = method_spec(method).option_names()
        # a method's option goes to the methods that take it; the predictor's own arguments to both
        kwargs = {k: v for k, v in given.items() if not args.flags[k].owners or k in own}
        for search in ("source_length", "batch_size"):
            results.append(fit_sizes(copy.deepcopy(config), method, budget, **sizes, search=search, **kwargs))
    if args.json:
        print(json.dumps({"budget_bytes": budget, **sizes, "fits": [r.to_dict() for r in results]}, indent=2))
    else:
        print(format_fit(results, budget, sizes))
    return 0


def paper_side_layers(backbone: str) -> list[int]:
    """``--side-layers paper``: the paper's list of kept layers for t5-base/large/3b."""
    from ..memory import PAPER_SIDE_LAYERS

    if backbone not in PAPER_SIDE_LAYERS:
        raise ConfigError(
            f"--side-layers paper: the paper has a list for {', '.join(PAPER_SIDE_LAYERS)} only"
        )
    return list(PAPER_SIDE_LAYERS[backbone])


def run_vision(args: argparse.Namespace, given: dict, visual_options: dict) -> int:
    """CLIP-T5: one prediction per task batch of the authors' setting; the largest is the run's peak."""
    from ..memory import format_gib, load_config, predict_memory

    task = args.vl_task or "all"
    if task != "all" and task not in PAPER_VL_BATCHES:
        raise ConfigError(f"--vl-task must be one of {', '.join(PAPER_VL_BATCHES)} or all, got {task!r}")
    config = load_config(VL_BACKBONES.get(args.backbone, args.backbone))
    config._name_or_path = args.backbone
    predictions = {}
    for name, paper in PAPER_VL_BATCHES.items():
        if task not in ("all", name):
            continue
        sizes = {k: getattr(paper, k) for k in ("batch_size", "source_length", "target_length")}
        visual = replace(paper.visual, **visual_options)
        predictions[name] = predict_memory(
            copy.deepcopy(config), args.method, **{**sizes, **given}, visual=visual
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
    from ..memory import format_gib

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
