"""``laddertune train`` and ``laddertune evaluate``: flags map one to one onto :class:`TrainConfig` fields.

The defaults are chosen so that ``laddertune train --task rte`` finishes in minutes on two CPU cores with MiniLM:
3 epochs (``--epochs paper`` for the paper's 20 or 10), batch 32 and inputs of at most 128 tokens.
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm.auto import tqdm

from ..core.config import ATTN_IMPLEMENTATIONS, BACKBONE_DTYPES
from ..errors import ConfigError
from ..training import evaluate, format_metrics, train
from ..training.config import (
    CHAINS,
    FORMATS,
    INITS,
    METHODS,
    PROBLEM_TYPES,
    PROTOCOLS,
    TAP_DTYPES,
    TrainConfig,
    parse_int_list,
)
from ..training.distributed import is_main_process
from ..training.evaluation import MAJORITY, ONE_CLASS
from ..training.optimizer import OPTIMIZERS
from ..training.precision import PRECISIONS

CLI_EPOCHS = 3  # the command line's default; the library's is the task's (paper) count


def register(subparsers) -> None:
    """Add the ``train`` and ``evaluate`` subcommands."""
    p = subparsers.add_parser(
        "train",
        help="train LST or a baseline on a GLUE task or your own data",
        description="Train LST (or a baseline) and evaluate each epoch; writes checkpoints, metrics.jsonl "
        "and results.json into --output-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("task and model")
    g.add_argument(
        "--task", required=True, help="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte) or custom"
    )
    g.add_argument("--backbone", default="minilm", help="alias (minilm, smollm2), local folder or hub id")
    g.add_argument(
        "--method",
        default="lst",
        choices=METHODS,
        help="LST, its Figure 8 ablations (side-tuning: no ladders, one late shortcut; pruned: the pruned side "
        "network alone, needs --init magnitude/fisher), or a baseline",
    )
    g.add_argument(
        "--format",
        default=None,
        choices=FORMATS,
        help="data format; default: text2text for T5, classification otherwise",
    )
    g.add_argument(
        "--reduction-factor", type=int, default=8, help="LST: side network width is 1/r of the backbone"
    )
    g.add_argument(
        "--side-layers",
        type=_int_list,
        default=None,
        help="LST: backbone layers (0-based) with a side layer, e.g. 1,2,3; default all",
    )
    g.add_argument("--init", default="random", choices=INITS, help="LST: side weights start random or pruned")
    g.add_argument(
        "--pruning-chain",
        default="residual",
        choices=CHAINS,
        help="LST, pruned init: one set of residual dims (residual) or each matrix's own (authors)",
    )
    g.add_argument(
        "--fisher-samples",
        type=int,
        default=1024,
        help="LST, --init fisher: examples for the Fisher information",
    )
    g.add_argument(
        "--final-shortcut",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="LST, classification: the head reads the backbone's final state + the side's (default on); "
        "--no-final-shortcut: the side's alone (the authors' head)",
    )
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run the backbone repository's own Python code (off: only built-in models load)",
    )
    g.add_argument(
        "--backbone-dropout",
        action="store_true",
        help="LST: keep the frozen backbone's dropout on while training (the authors' setting)",
    )
    g.add_argument(
        "--device-map",
        default=None,
        choices=("auto",),
        help="LST: spread the frozen backbone over the visible devices (accelerate), side network on one",
    )
    g.add_argument("--freeze-layers", type=int, default=0, help="baselines: freeze the first N layers")
    g.add_argument("--lora-rank", type=int, default=32, help="lora: the rank of the update")
    g.add_argument(
        "--adapter-reduction", type=int, default=16, help="adapter: bottleneck width is hidden size / N"
    )
    g = p.add_argument_group("device and precision")
    _device_flag(g)
    g.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="forward under autocast in bf16/fp16 (fp16 with a gradient scaler); weights and optimizer stay fp32",
    )
    g.add_argument(
        "--backbone-dtype",
        default="float32",
        choices=BACKBONE_DTYPES,
        help="LST: dtype of the frozen backbone; int8/nf4 quantize it (bitsandbytes on CUDA, torchao on CPU)",
    )
    g.add_argument("--attn", default="sdpa", choices=ATTN_IMPLEMENTATIONS, help="LST: side attention kernel")
    g.add_argument(
        "--loss-chunk-size",
        type=int,
        default=None,
        help="LST, LM formats: the loss N positions at a time (no full fp32 logits + gradient at once)",
    )
    g.add_argument(
        "--side-checkpointing",
        action="store_true",
        help="LST: recompute the side layers in the backward (activation checkpointing; same gradients)",
    )
    g.add_argument(
        "--side-attention-dropout",
        type=float,
        default=None,
        metavar="P",
        help="LST: dropout on the side network's attention probabilities (default: the backbone config's)",
    )
    g.add_argument(
        "--side-attention-heads",
        type=int,
        default=None,
        metavar="N",
        help="LST: the side network's attention heads (default: the backbone's, each d_head/r wide)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--optimizer",
        default="adamw",
        choices=OPTIMIZERS,
        help="adamw (float32 moments, 8 bytes/param) or adamw8bit (bitsandbytes, ~2 bytes/param)",
    )
    g.add_argument(
        "--epochs",
        type=_epochs,
        default=CLI_EPOCHS,
        help="training epochs; 3 finishes RTE in minutes on a CPU; 'paper' uses the task's count "
        "(20 for RTE, MRPC, CoLA, STS-B; 10 for the others)",
    )
    g.add_argument(
        "--batch-size", type=int, default=32, help="training batch (the paper's 100 is slow on a CPU)"
    )
    g.add_argument("--eval-batch-size", type=int, default=64, help="evaluation batch")
    g.add_argument(
        "--lr", type=float, default=None, help="learning rate; default 3e-3 LST, 0.3 prompt, 3e-4 others"
    )
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="default min(500, 10%% of all steps): the paper's 500 would swallow a short run",
    )
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0 disables)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, dropout and data order")
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-dir",
        default=None,
        help="folder with <task>/train.jsonl and validation.jsonl; default $LADDERTUNE_DATA_DIR, else the hub",
    )
    g.add_argument(
        "--protocol",
        default="dev",
        choices=PROTOCOLS,
        help="dev: validate on the dev set; paper: the paper's validation/test splits",
    )
    g.add_argument("--max-train-samples", type=int, default=None, help="train on a seeded subsample")
    g.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on a seeded subsample")
    g.add_argument("--max-length", type=int, default=128, help="longest input in tokens (the paper's 128)")
    g.add_argument("--train-file", default=None, help="your training data (.jsonl, .csv, .tsv)")
    g.add_argument("--validation-file", default=None, help="your validation data; default 10%% of train")
    g.add_argument("--text-column", default=None, help="column of the (first) text")
    g.add_argument("--text-pair-column", default=None, help="column of the second text")
    g.add_argument("--label-column", default=None, help="column of the label (default: label)")
    g.add_argument(
        "--problem-type",
        choices=PROBLEM_TYPES,
        default=None,
        help="custom data: regression or classification; default inferred from the labels (and printed)",
    )
    g.add_argument(
        "--tap-cache",
        default=None,
        help="LST: folder of the tap cache; the backbone runs once per training example, later epochs and runs "
        "read its taps from there",
    )
    g.add_argument(
        "--tap-dtype",
        default="float32",
        choices=TAP_DTYPES,
        help="dtype of cached taps (float32 trains exactly as uncached; the others take half the disk)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default=None, help="default runs/<task>-<method>-<timestamp>")
    g.add_argument(
        "--memory-steps", type=int, default=3, help="training steps measured for peak memory (0: off)"
    )
    g.add_argument(
        "--save-steps", type=int, default=None, help="also checkpoint every N steps (always each epoch)"
    )
    g.add_argument("--log-every", type=int, default=10, help="log the training loss every N steps")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    g.add_argument("--resume", action="store_true", help="continue the unfinished run in --output-dir")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "evaluate",
        help="score a saved checkpoint on the validation (and test) split",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument(
        "--checkpoint", required=True, help="a run folder or its checkpoint-best / checkpoint-last"
    )
    e.add_argument("--data-dir", default=None, help="data folder, if not the one used for training")
    e.add_argument("--backbone", default=None, help="load this backbone instead of the recorded one")
    e.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on a seeded subsample")
    e.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default: the run's)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run the backbone repository's own Python code (never taken from the run folder)",
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    _device_flag(e)
    e.set_defaults(func=run_evaluate)


def _device_flag(group) -> None:
    group.add_argument(
        "--device", default="auto", help="auto (a GPU when CUDA is available, else CPU), cpu, cuda or cuda:N"
    )


def _int_list(text: str) -> list[int]:
    try:
        return parse_int_list(text, "--side-layers")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _epochs(text: str) -> int | None:
    if text == "paper":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'paper', got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` a ``train`` command line asks for (every flag is a field of the same name)."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**values)


def _print_record(record: dict) -> None:

    kind = record.get("type")
    if kind == "eval":
        where = (
            f"epoch {record['epoch']}" if record["split"] == "validation" else f"best epoch {record['epoch']}"
        )
        tqdm.write(f"{where} step {record['step']}: {record['split']} {format_metrics(record['metrics'])}")
    elif kind == "tap_cache":
        tqdm.write(record["message"])
    elif kind == "resume":
        tqdm.write(f"resumed at step {record['step']} (epoch {record['epoch']})")


def quiet(args: argparse.Namespace) -> None:
    """Without -v, hide transformers' load reports and its weight-loading bars; honour --threads."""
    import torch
    import transformers

    if not getattr(args, "verbose", False):
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)


def run_train(args: argparse.Namespace) -> int:

    config = config_from_args(args)
    quiet(args)
    main = is_main_process()  # under torchrun/accelerate, rank 0 alone draws bars and prints
    show = main and not args.no_progress and sys.stderr.isatty()
    results = train(config, show_progress=show, on_record=_print_record)
    if not main:
        return 0
    m, t, mem = results["metrics"], results["timing"], results["memory"]
    best = m["best_validation"]
    line = f"done: best epoch {m['best_epoch']} validation score {best['score']:.2f}"
    if m["test"] is not None:
        line += f", test score {m['test']['score']:.2f}"
    p = results["parameters"]
    line += f"; {p['trainable']:,} trainable params ({p['trainable_percent']:.3f}%)"
    if mem["peak_train_gib"] is not None:
        line += f", peak train memory {mem['peak_train_gib']:.3f} GiB"
    if t["seconds_per_step"] is not None:
        line += f", {t['seconds_per_step']:.2f} s/step"
    if best.get(MAJORITY, 0.0) >= ONE_CLASS:  # the score is then the majority rate, not something learned
        line += (
            f"; predicts one class for {best[MAJORITY]:.0f}% of validation rows (no better than a constant)"
        )
    print(line)
    print(f"results: {config.output_dir}/results.json")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:

    quiet(args)
    result = evaluate(
        args.checkpoint,
        data_dir=args.data_dir,
        max_eval_samples=args.max_eval_samples,
        batch_size=args.batch_size,
        show_progress=not args.no_progress and sys.stderr.isatty(),
        trust_remote_code=args.trust_remote_code,
        device=args.device,
        backbone=args.backbone,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for split in ("validation", "test"):
        if result[split] is not None:
            print(f"{result['task']} {result['method']} {split}: {format_metrics(result[split])}")
    return 0
