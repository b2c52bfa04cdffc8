"""``laddertune predict``: a checkpoint on new text, one JSON line per input row (stdout or ``--output``)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError
from ..training.config import GenerationSettings
from .flags import Flag, add_flags, given_options
from .train import NO_PROGRESS, quiet


def register(subparsers) -> None:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict",
        help="run a trained checkpoint on a JSONL/CSV file of new text",
        description="Predict each row of --input with a checkpoint: label and probabilities (classification), "
        "value (regression), generated text (text2text, causal), or the answer to a question on images "
        "(vision-and-language, with --features). One JSON line per row, in input order.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="a run folder or one of its checkpoint folders; repeat it to run several LST classification side "
        "networks of one backbone on one backbone pass (each row then maps run names to answers)",
    )
    p.add_argument(
        "--input", required=True, help="rows to predict (.jsonl, .csv, .tsv) with the task's columns"
    )
    p.add_argument("--output", default=None, help="write the JSON lines here (default: stdout)")
    p.add_argument(
        "--features",
        default=None,
        metavar="FILE",
        help="a vision-and-language checkpoint: the HDF5 feature file of the rows' images (laddertune features)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    add_loading_flags(p)
    generation: dict[str, Flag] = {}
    group = p.add_argument_group("generation (a generative checkpoint; default: its recorded settings)")
    add_flags(group, GenerationSettings, generation, skip=("eval_generate",))
    p.set_defaults(func=run_predict, generation_flags=generation)


def add_loading_flags(p) -> None:
    """What rebuilding a checkpoint's model takes (predict, generate): the backbone, what may run or load, quiet."""
    p.add_argument("--backbone", default=None, help="load this backbone instead of the recorded one")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run the backbone repository's own Python code (never taken from the checkpoint)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load a backbone whose weights are only pickle files (never taken from the checkpoint)",
    )
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )


def run_predict(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    from ..training import predict_file

    quiet(args)
    answers = predict_file(
        args.checkpoint if len(args.checkpoint) > 1 else args.checkpoint[0],
        args.input,
        args.output,
        batch_size=args.batch_size,
        backbone=args.backbone,
        trust_remote_code=args.trust_remote_code,
        show_progress=not args.no_progress and sys.stderr.isatty(),
        generation=given_options(args, args.generation_flags),
        allow_pickle=args.allow_pickle,
        features=args.features,
    )
    if args.output is None:
        for answer in answers:
            print(json.dumps(answer))
    else:
        print(f"{len(answers)} predictions: {args.output}", file=sys.stderr)
    return 0
