"""``laddertune train`` and ``laddertune evaluate``: their flags are generated from the declarations they set.

``train``'s flags are the options of :class:`~laddertune.training.config.TrainConfig`'s sections and of every
method's options class (:mod:`laddertune.methods`), grouped as the sections are; ``--config run.yaml`` reads the
same options from a file (a saved ``train_config.json`` reproduces its run), and flags override it. An option of a
method other than ``--method`` is a one-line error. ``evaluate``'s flags are the keyword arguments of
:func:`laddertune.training.evaluation.evaluate`.

The defaults are chosen so that ``laddertune train --task rte`` finishes in minutes on two CPU cores with MiniLM:
3 epochs (``--epochs paper`` for the paper's 20 or 10), batch 32 and inputs of at most 128 tokens. Nothing here
imports torch until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError
from ..methods.registry import method_names, method_spec
from ..training.config import SECTIONS, TrainConfig, flatten_sections
from .flags import (
    Flag,
    add_flags,
    add_signature_flags,
    cli_defaults,
    finish_help,
    given_options,
    read_config_file,
)

NO_PROGRESS = "no progress bars, ours or our dependencies' (also with -v)"
GROUPS = {
    "data": "data",
    "model": "model",
    "method": "method (each option names the methods that take it)",
    "optimization": "optimisation",
    "run": "run",
    "devices": "devices",
    "generation": "generation (evaluation, and prediction from the checkpoints)",
}


def register(subparsers) -> None:
    """Add the ``train`` and ``evaluate`` subcommands."""
    p = subparsers.add_parser(
        "train",
        help="train LST or a baseline on a GLUE task or your own data",
        description="Train LST (or a baseline) and evaluate each epoch; writes checkpoints, metrics.jsonl "
        "and results.json into --output-dir.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML or JSON file of options (flat, or in the sections below; a run's train_config.json "
        "reproduces it); flags override it",
    )
    flags: dict[str, Flag] = {}
    groups = {name: p.add_argument_group(title) for name, title in GROUPS.items()}
    for name, cls in SECTIONS.items():
        add_flags(groups[name], cls, flags)
        if name == "model":
            _method_flags(groups["method"], flags)
    groups["run"].add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    groups["run"].add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    finish_help(p, flags)
    p.set_defaults(func=run_train, flags=flags)

    e = subparsers.add_parser(
        "evaluate",
        help="score a saved checkpoint on the validation (and test) split",
        description="Score a saved checkpoint on its task's validation (and test) split.",
    )
    eval_flags: dict[str, Flag] = {}
    add_signature_flags(
        e, "laddertune.training.evaluation", "evaluate", eval_flags, skip=("show_progress",),
        aliases={"max_eval_samples": ("eval_max_samples",)},
    )  # fmt: skip
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    e.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    finish_help(e, eval_flags)
    e.set_defaults(func=run_evaluate, flags=eval_flags)


def _method_flags(group, flags: dict[str, Flag]) -> None:
    names = method_names()
    summaries = "; ".join(f"{n}: {method_spec(n).summary}" for n in names)
    group.add_argument(
        "--method", choices=names, default=argparse.SUPPRESS, help=f"the training method ({summaries})"
    )
    flags["method"] = Flag("method", "method", [], ["lst"])
    for name in names:
        add_flags(group, method_spec(name).options, flags, owner=name)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` a ``train`` command line asks for: the ``--config`` file's options, then the flags.

    Raises:
        ConfigError: a missing task, an option of another method than ``--method``, or a bad value (one line).
    """
    options = {
        **cli_defaults(args.flags),
        **(flatten_sections(read_config_file(args.config)) if args.config else {}),
    }
    given = given_options(args, args.flags)
    method = given.get("method", options.get("method", "lst"))
    own = method_spec(method).option_names() if method in method_names() else {}
    for name, value in given.items():  # a flag of another method is an error even where the file is silent
        flag = args.flags[name]
        if flag.owners and name not in own:
            raise ConfigError(
                f"--{name.replace('_', '-')} is an option of method {', '.join(flag.owners)}, not of {method}"
            )
        options[name] = value
    if "task" not in options and "train_file" not in options:
        raise ConfigError(
            "--task or --train-file is required (or a config file's); see laddertune train --help"
        )
    return TrainConfig.from_flat(options)


def _print_record(record: dict) -> None:
    from tqdm.auto import tqdm

    from ..training import format_metrics

    kind = record.get("type")
    if kind == "eval":
        where = (
            f"epoch {record['epoch']}" if record["split"] == "validation" else f"best epoch {record['epoch']}"
        )
        tqdm.write(f"{where} step {record['step']}: {record['split']} {format_metrics(record['metrics'])}")
    elif kind == "tap_cache":
        tqdm.write(record["message"])
    elif kind in ("start", "resume"):
        tqdm.write(start_line(record))


def start_line(record: dict) -> str:
    """The first line of a run: what trains, in which format and head, on how much, for how many steps."""
    line = f"train {record['method']} on {record['task']}: "
    line += f"format {record['format']}, head {record['head']}; "
    n = record["examples"]
    line += f"{n['train']:,} train / {n['validation']:,} validation examples; "
    per_step, k = record["examples_per_step"], record["gradient_accumulation_steps"]
    line += f"{_count(record['epochs'], 'epoch')} of {_count(record['steps_per_epoch'], 'step')}, "
    if record.get("task_batch_sizes"):  # vision and language: each batch is one task's
        sizes = ", ".join(f"{task} {n:,}" for task, n in record["task_batch_sizes"].items())
        batches = "one task's batch" if k == 1 else f"{k} batches, each one task's"
        line += f"{_count(record['total_steps'], 'step')} of {batches} ({sizes})"
    else:
        line += f"{_count(record['total_steps'], 'step')} of {per_step:,} examples"
        line += f" ({k} micro-batches of {per_step // k})" if k > 1 else ""
    if record["type"] == "resume":
        line += f"; resumed at step {record['step']} (epoch {record['epoch']})"
    return line


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def quiet(args: argparse.Namespace) -> None:
    """Without -v, hide transformers' load reports; honour --threads. Our dependencies' progress bars are drawn
    only with -v and never with --no-progress: transformers' (weight loading, hub downloads, and through
    :func:`laddertune.core.backbones.load_backbone` its GGUF de-quantisation) and datasets' (hub datasets,
    ``save_to_disk`` folders), each through its library's own switch."""
    import datasets
    import torch
    import transformers

    verbose = getattr(args, "verbose", False)
    if not verbose:
        transformers.logging.set_verbosity_error()
    if not verbose or getattr(args, "no_progress", False):
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be 1 or more, got {args.threads}")
        torch.set_num_threads(args.threads)


def run_train(args: argparse.Namespace) -> int:
    from ..training import train
    from ..training.distributed import is_main_process
    from ..training.evaluation import MAJORITY, ONE_CLASS

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
    print(f"results: {config.run.output_dir}/results.json")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..training import evaluate, format_metrics

    quiet(args)
    kwargs = given_options(args, args.flags)
    result = evaluate(show_progress=not args.no_progress and sys.stderr.isatty(), **kwargs)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for split in ("validation", "test"):
        if result[split] is not None:
            print(f"{result['task']} {result['method']} {split}: {format_metrics(result[split])}")
    return 0
