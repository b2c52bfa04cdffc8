"""Accuracy of the side attention options at Table 1's budget: 12 heads (the default) against 3 heads and attention
dropout 0, 3 seeds, SST-2 and MRPC, every run through ``laddertune train``.

    python benchmarks/side_attention_accuracy.py [--seeds 0 1 2] [--tasks sst2 mrpc]

The budget is the one of the README's Table 1 (96 steps of batch 16, length 64, 3 epochs of 512 seeded examples,
the first 256 official dev rows, 1 thread, the shared float32 tap cache). The default variant's runs are Table 1's
LST runs (``runs/suite/table1_minilm/<task>-lst-s<seed>``, same command); the others go to
``runs/side_attention/<task>-<variant>-s<seed>``. A run folder with its ``results.json`` is read back, not
retrained, as in ``benchmarks/suite.py``. Writes benchmarks/results/side_attention_accuracy.json and .md. s/step is
each run's own, measured under whatever shared the cores then: the table does not compare it.
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
    "default": (),
    "attn0": ("--side-attention-dropout", "0"),
    "heads3": ("--side-attention-heads", "3"),
    "heads3-attn0": ("--side-attention-heads", "3", "--side-attention-dropout", "0"),
}
BUDGET = ("--epochs", "3", "--batch-size", "16", "--max-length", "64", "--max-train-samples", "512")
BUDGET += ("--max-eval-samples", "256", "--threads", "1", "--memory-steps", "3", "--log-every", "5")


def run_dir(task: str, variant: str, seed: int) -> Path:
    if variant == "default":
        return ROOT / "runs" / "suite" / "table1_minilm" / f"{task}-lst-s{seed}"
    return ROOT / "runs" / "side_attention" / f"{task}-{variant}-s{seed}"


def train(task: str, variant: str, seed: int, data_dir: str) -> dict:
    out = run_dir(task, variant, seed)
    if not (out / "results.json").exists():
        argv = [sys.executable, "-m", "laddertune.cli", "train", "--task", task, "--method", "lst"]
        argv += ["--backbone", "minilm", "--seed", str(seed), "--protocol", "dev", "--device", "cpu", *BUDGET]
        argv += ["--no-progress", "--overwrite", "--output-dir", str(out), "--data-dir", data_dir]
        argv += ["--tap-cache", str(ROOT / "runs" / "suite" / "tap_cache"), *VARIANTS[variant]]
        subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    results = json.loads((out / "results.json").read_text())
    return {"score": results["metrics"]["best_validation"]["score"], **results["timing"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    parser.add_argument("--data-dir", default=os.environ.get("LADDERTUNE_DATA_DIR", "/work/shared/data/glue"))
    args = parser.parse_args()
    rows = [
        {"task": t, "variant": v, "seed": s, **train(t, v, s, args.data_dir)}
        for v in VARIANTS
        for t in args.tasks
        for s in args.seeds
    ]
    lines = ["| variant | flags | " + " | ".join(args.tasks) + " |", "|---|---|" + "---:|" * len(args.tasks)]
    for v, flags in VARIANTS.items():
        cells = []
        for t in args.tasks:
            scores = [r["score"] for r in rows if r["variant"] == v and r["task"] == t]
            spread = f" ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
            cells.append(f"{statistics.fmean(scores):.2f}{spread}")
        lines.append(f"| {v} | `{' '.join(flags) or '(none)'}` | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (RESULTS / "side_attention_accuracy.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "side_attention_accuracy.md").write_text(
        "# Side attention options: accuracy on MiniLM at Table 1's budget\n\n"
        "`python benchmarks/side_attention_accuracy.py`: best dev score, mean ± std over seeds "
        f"{', '.join(map(str, args.seeds))}.\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
