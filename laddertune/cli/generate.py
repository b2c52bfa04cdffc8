"""``laddertune generate``: a generative checkpoint answers prompts typed at the command line, streamed as decoded.

The prompts are the positional arguments, or the lines of standard input when none is given (one prompt a line,
empty lines skipped). A chat-trained checkpoint renders each prompt as a user turn (after ``--system``, when
given) in its chat template; others as a prompt of their training format. The text streams through transformers'
``TextStreamer``; the answers are the same as ``laddertune predict`` gives for those prompts with the same
settings.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..training.config import GenerationSettings
from .flags import Flag, add_flags, given_options
from .predict import add_loading_flags
from .train import quiet


def register(subparsers) -> None:
    """Add the ``generate`` subcommand."""
    p = subparsers.add_parser(
        "generate",
        help="stream a generative checkpoint's answers to prompts",
        description="Answer each prompt with a generative checkpoint (causal or seq2seq LM), streaming the text "
        "to stdout as it is generated, one answer a line. Prompts: the arguments, or standard input's lines.",
    )
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts (default: one a line from stdin)")
    p.add_argument(
        "--checkpoint", required=True, help="a generative run folder or one of its checkpoint folders"
    )
    p.add_argument(
        "--system", default=None, help="a system turn before each prompt (chat-trained checkpoints)"
    )
    add_loading_flags(p)
    generation: dict[str, Flag] = {}
    group = p.add_argument_group("generation (default: the checkpoint's recorded settings)")
    add_flags(group, GenerationSettings, generation, skip=("eval_generate", "num_beams"))
    p.set_defaults(func=run_generate, generation_flags=generation)


def run_generate(args: argparse.Namespace) -> int:
    prompts = args.prompts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not prompts:
        raise ConfigError("no prompt: give prompts as arguments or one a line on standard input")
    from transformers import TextStreamer

    from ..training import load_predictor
    from ..training.generative_prediction import GenerativePredictor

    quiet(args)
    predictor = load_predictor(
        args.checkpoint,
        backbone=args.backbone,
        trust_remote_code=args.trust_remote_code,
        # one sequence a prompt: transformers streams greedy decoding and sampling, not beam search
        generation={**given_options(args, args.generation_flags), "num_beams": 1},
        allow_pickle=args.allow_pickle,
    )
    if not isinstance(predictor, GenerativePredictor):
        raise ConfigError(f"{args.checkpoint} is not a generative checkpoint: use laddertune predict")
    examples = [predictor.example(prompt, args.system) for prompt in prompts]  # every prompt checked first
    streamer = TextStreamer(predictor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    for example in examples:
        predictor.stream(example, streamer)  # the streamer prints the text and ends the line
    return 0
