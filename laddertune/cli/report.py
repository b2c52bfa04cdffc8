"""``laddertune report``: markdown tables and PNG figures from finished runs.

Example::

    laddertune report runs/sst2-lst-* runs/sst2-full-* --output reports/sst2
    laddertune report benchmarks/results/table1_minilm.json --output benchmarks/results/table1_minilm_report

Each argument is a run folder (``results.json`` from ``laddertune train``), a results JSON file (a list of rows
with at least ``task``, ``method``, ``seed``, ``score``, ``peak_train_gib`` and ``seconds_per_step``), or a folder
of results files (one JSON per run, as ``benchmarks/suite.py`` writes them).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="markdown tables and PNG figures from run folders or results files",
        description="Tables (mean ± std over seeds per task and method, the GLUE-style average, peak memory and "
        "s/step) and figures (1: score against memory; 5, 6: trade-off curves; 7, 8: bars; training curves) "
        "of the rows present.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_OR_RESULTS", help="run folders or results JSON files")
    p.add_argument("--output", required=True, help="folder to write the tables and PNGs into")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import load_rows, write_report

    rows = load_rows(args.runs)
    written = write_report(rows, args.output)
    tables = sum(p.suffix == ".md" and p.name != "report.md" for p in written)
    pngs = sum(p.suffix == ".png" for p in written)
    print(f"report: {len(rows)} runs -> {tables} tables, {pngs} figures in {args.output} (report.md)")
    return 0
