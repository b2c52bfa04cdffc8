"""The side network's dropouts at the README's main job: LST on MiniLM, the embedded SST-2 sample (4,000 training
rows, one epoch of 125 steps of 32), scored on the whole official dev set (872 sentences); every run through
``laddertune train``, one at a time, 2 threads.

    python benchmarks/side_dropout_sst2.py [--seeds 0 1 2 3] [--variants both0.1 hidden0 attn0 none torch-masks]

Variants: the side's hidden-state dropout (``--side-dropout``) and attention dropout (``--side-attention-dropout``)
at MiniLM's own 0.1 or at 0; ``torch-masks``: both at 0.1, the masks drawn by torch's own CPU dropout
(``LADDERTUNE_CPU_DROPOUT=torch``) instead of laddertune's (:mod:`laddertune.core.cpu_dropout`). Runs go to ``runs/side_dropout_sst2/<variant>-s<seed>``; a run folder with its
``results.json`` is read back, not retrained. Writes benchmarks/results/side_dropout_sst2.json and .md: dev
accuracy per seed, mean ± std, the mean paired difference to ``both0.1``, and the median seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = {
    "both0.1": ("--side-dropout", "0.1", "--side-attention-dropout", "0.1"),
    "hidden0": ("--side-dropout", "0", "--side-attention-dropout", "0.1"),
    "attn0": ("--side-dropout", "0.1", "--side-attention-dropout", "0"),
    "none": ("--side-dropout", "0", "--side-attention-dropout", "0"),
    "torch-masks": ("--side-dropout", "0.1", "--side-attention-dropout", "0.1"),
}
ENVIRONMENT = {"torch-masks": {"LADDERTUNE_CPU_DROPOUT": "torch"}}


def train(variant: str, seed: int) -> dict:
    out = ROOT / "runs" / "side_dropout_sst2" / f"{variant}-s{seed}"
    if not (out / "results.json").exists():
        argv = [sys.executable, "-m", "laddertune.cli", "train", "--task", "sst2", "--epochs", "1"]
        argv += [
            "--seed",
            str(seed),
            "--threads",
            "2",
            "--no-progress",
            "--overwrite",
            "--output-dir",
            str(out),
        ]
        env = {**os.environ, **ENVIRONMENT.get(variant, {})}
        subprocess.run([*argv, *VARIANTS[variant]], check=True, cwd=ROOT, env=env)
    results = json.loads((out / "results.json").read_text())
    return {
        "score": results["metrics"]["best_validation"]["score"],
        "seconds_per_step": results["timing"]["seconds_per_step"],
        "peak_train_gib": results["memory"]["peak_train_gib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    rows = [{"variant": v, "seed": s, **train(v, s)} for v in args.variants for s in args.seeds]
    base = {r["seed"]: r["score"] for r in rows if r["variant"] == "both0.1"}
    lines = [
        "| variant | flags | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std | "
        "paired difference to both0.1 | s/step (median) | peak train GiB |",
        "|---|---|" + "---:|" * (len(args.seeds) + 4),
    ]
    for v in args.variants:
        mine = [r for r in rows if r["variant"] == v]
        scores = [r["score"] for r in mine]
        diffs = [r["score"] - base[r["seed"]] for r in mine if r["seed"] in base]
        paired = f"{statistics.fmean(diffs):+.2f}" if diffs and v != "both0.1" else ""
        lines.append(
            f"| {v} | `{' '.join([*(f'{k}={x}' for k, x in ENVIRONMENT.get(v, {}).items()), *VARIANTS[v]])}` | "
            + " | ".join(f"{s:.2f}" for s in scores)
            + f" | {statistics.fmean(scores):.2f} ± {statistics.stdev(scores):.2f} | {paired} | "
            f"{statistics.median(r['seconds_per_step'] for r in mine):.3f} | "
            f"{statistics.median(r['peak_train_gib'] for r in mine):.3f} |"
        )
    table = "\n".join(lines)
    print(table)
    (RESULTS / "side_dropout_sst2.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "side_dropout_sst2.md").write_text(
        "# The side's dropouts at the main job: LST on MiniLM, 4,000 SST-2 rows, 1 epoch, the full dev set\n\n"
        f"`python benchmarks/side_dropout_sst2.py --seeds {' '.join(map(str, args.seeds))}`: dev accuracy of "
        "each run (`laddertune train --task sst2 --epochs 1 --seed S`, the embedded sample), 2 threads, one run "
        f"at a time.\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
