"""MkDocs hook: renders the command-line reference from laddertune's own argparse parsers at build time.

A page holding the line ``<!-- cli-reference -->`` gets, in its place, one section per subcommand with the text of
its ``--help``, so the reference cannot drift from the parsers (nothing in it is written by hand).
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def render() -> str:
    """The markdown of every subcommand's help, in the order the parsers register them."""
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: fix it so every build is the same
    from laddertune.cli.main import build_parser

    parser = build_parser()
    parts = ["## laddertune", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts += [f"## laddertune {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
