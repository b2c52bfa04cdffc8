"""The dispatcher of the ``laddertune`` command line.

Each subcommand lives in its own module with two functions: ``register(subparsers)`` adds its parser and
``run(args) -> int`` does the work. User errors (:class:`LadderTuneError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import LadderTuneError
from . import features, generate, memory, predict, report, serve, train

# Each module registers its subcommands (train/evaluate, predict, generate, serve, memory, features, report).
SUBCOMMAND_MODULES = (train, predict, generate, serve, memory, features, report)


class UsageError(LadderTuneError):
    """A command line argparse cannot parse: one line with a hint, instead of argparse's usage dump."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line naming the command's ``--help`` (exit code 2, like every error)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="laddertune", description="Ladder Side-Tuning for Hugging Face models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except LadderTuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
