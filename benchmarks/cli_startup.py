"""How long the command line takes to answer ``--help``: ``laddertune --help`` and ``laddertune train --help``.

Each command runs as a fresh ``python -m laddertune`` subprocess (interpreter start and every import included, as a
user types it), once to warm the disk cache and then ``--repeats`` times; the median is the figure, with the
minimum and maximum beside it. ``--before DIR`` times a second source tree the same way in the same run (another
version of the package, e.g. ``git archive fe41c65 | tar -x -C /tmp/old``), so that the two are compared under the
same load.

    python benchmarks/cli_startup.py --before /tmp/old    # about a minute

Writes benchmarks/results/cli_startup.{json,md}. The machine's load average is recorded: the machine is shared,
and a loaded machine stretches every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMANDS = {"laddertune --help": ["--help"], "laddertune train --help": ["train", "--help"]}


def time_command(tree: Path, args: list[str], repeats: int) -> dict:
    """Seconds of ``python -m laddertune ARGS`` with ``tree`` first on the path: median, min, max, every run."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "laddertune", *args]
    subprocess.run(cmd, cwd=tree, env=env, capture_output=True, check=True)  # warm the disk cache
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        runs.append(time.perf_counter() - t0)
        if done.returncode != 0 or "usage:" not in done.stdout:
            raise SystemExit(f"{' '.join(cmd)} in {tree} failed: {done.stderr[-500:]}")
    return {
        "median_s": round(statistics.median(runs), 3),
        "min_s": round(min(runs), 3),
        "max_s": round(max(runs), 3),
        "runs_s": [round(r, 3) for r in runs],
    }


def commit_of(tree: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    return done.stdout.strip() or None if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another source tree of laddertune, timed the same way")
    parser.add_argument("--before-label", default=None, help="what --before is (default: its folder)")
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.before:
        trees[args.before_label or str(args.before)] = args.before.resolve()
    load_before = os.getloadavg()
    timings = {
        label: {"tree": str(tree), "commit": commit_of(tree), "commands": {}} for label, tree in trees.items()
    }
    for name, argv in COMMANDS.items():  # interleaved per command: both trees see the same load
        for label, tree in trees.items():
            timings[label]["commands"][name] = time_command(tree, argv, args.repeats)
            print(f"{label:>12}  {name:<26} median {timings[label]['commands'][name]['median_s']:.2f} s")
    result = {
        "what": "wall seconds of a fresh `python -m laddertune ...` subprocess, median of the repeats",
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15_min": {"before": list(load_before), "after": list(os.getloadavg())},
        "timings": timings,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "cli_startup.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'cli_startup.json'} and .md")


def markdown(result: dict) -> str:
    lines = [
        "# `laddertune --help` start-up time",
        "",
        f"`python benchmarks/cli_startup.py`: a fresh subprocess per run (interpreter start and imports included), "
        f"one warm-up run, then {result['repeats']} timed runs; median (min-max) wall seconds. Python "
        f"{result['python']}, {result['cpus']} CPUs, load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.1f}' for x in result['load_average_1_5_15_min']['before'])} at the start (a shared "
        "machine: load stretches every figure).",
        "",
        "| tree | commit | " + " | ".join(f"`{c}`" for c in COMMANDS) + " |",
        "|---|---|" + "---|" * len(COMMANDS),
    ]
    for label, t in result["timings"].items():
        cells = [f"{c['median_s']:.2f} s ({c['min_s']:.2f}-{c['max_s']:.2f})" for c in t["commands"].values()]
        lines.append(f"| {label} | {t['commit'] or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
