"""Accuracy of projected taps and of the side's head count, at the README's Table 1 budgets, against the paper's
full-width Down with the backbone's heads. Every run is ``benchmarks/suite.py table1`` (so ``laddertune train``),
one variant at a time, one run at a time, 1 thread.

    python benchmarks/llm_scale_accuracy.py minilm [--variants authors pca random ...] [--seeds 0 1 2]
    python benchmarks/llm_scale_accuracy.py smollm2 [--variants authors default]

Protocols (the README's): ``minilm``: sst2 and mrpc, 96 steps of batch 16 over 3 epochs, length 64, 256 dev rows;
``smollm2``: sst2 in the causal format (the label as text), 48 steps of batch 8 over 2 epochs, length 64, 128 dev
rows. Each variant's runs go to ``runs/llm_scale/<protocol>/<variant>/`` and their rows to
``benchmarks/results/llm_scale_accuracy/<protocol>_<variant>/`` (a run whose row exists is not run again, as in the
suite). The tap cache of each protocol is shared by its variants (an entry per projection). Writes
benchmarks/results/llm_scale_accuracy_<protocol>.json and .md: mean ± std of the best dev score per variant and
task, and the median seconds per step of each variant's runs (measured in turn, on a shared machine: noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = "/work/shared/data/glue"
AUTHORS = "--tap-projection none --side-attention-heads 0"
VARIANTS = {
    "authors": AUTHORS,  # the paper's full-width Down, the backbone's heads (before this change, the default)
    "pca": "--tap-projection pca --side-attention-heads 0",
    "random": "--tap-projection random --side-attention-heads 0",
    "pca-heads1": "--tap-projection pca --side-attention-heads 1",
    "pca-heads3": "--tap-projection pca --side-attention-heads 3",
    "random-heads1": "--tap-projection random --side-attention-heads 1",
    "heads1": "--tap-projection none --side-attention-heads 1",
    # the side's dropouts (MiniLM's own are 0.1), with the classifiers' taps and heads spelled out
    "dropout0.1": "--tap-projection none --side-attention-heads 1 --side-dropout 0.1 --side-attention-dropout 0.1",
    "dropout0": "--tap-projection none --side-attention-heads 1 --side-dropout 0 --side-attention-dropout 0.1",
    "dropout0-attn0": "--tap-projection none --side-attention-heads 1 --side-dropout 0 --side-attention-dropout 0",
    "default": "",  # whatever the defaults are now
}
PROTOCOLS = {
    "minilm": dict(
        tasks=["sst2", "mrpc"],
        argv=["--steps", "96", "--epochs", "3", "--batch-size", "16", "--max-length", "64"]
        + ["--max-eval-samples", "256"],
    ),
    "smollm2": dict(
        tasks=["sst2"],
        argv=[
            "--backbone",
            "smollm2",
            "--format",
            "causal",
            "--methods",
            "lst",
            "--steps",
            "48",
            "--epochs",
            "2",
        ]
        + ["--batch-size", "8", "--max-length", "64", "--max-eval-samples", "128"],
    ),
}


def run_variant(protocol: str, variant: str, seeds: list[int]) -> list[dict]:
    spec = PROTOCOLS[protocol]
    out = RESULTS / "llm_scale_accuracy" / f"{protocol}_{variant}"
    argv = [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "table1", *spec["argv"]]
    if "--methods" not in argv:
        argv += ["--methods", "lst"]
    argv += ["--tasks", *spec["tasks"], "--seeds", *map(str, seeds), "--threads", "1", "--data-dir", DATA]
    argv += ["--output", str(out), "--rows-file", str(out) + ".json"]
    argv += ["--runs-dir", str(ROOT / "runs" / "llm_scale" / protocol / variant)]
    argv += ["--tap-cache", str(ROOT / "runs" / "llm_scale" / protocol / "tap_cache")]
    argv += [f"--train-args={VARIANTS[variant]}"]
    subprocess.run(argv, check=True, cwd=ROOT)
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return [r for r in rows if r["seed"] in seeds]


def summarise(protocol: str, results: dict[str, list[dict]]) -> str:
    tasks = PROTOCOLS[protocol]["tasks"]
    lines = ["| variant | flags | seeds | " + " | ".join(tasks) + " | mean | s/step (median) |"]
    lines.append("|---|---|---|" + "---:|" * (len(tasks) + 2))
    for variant, rows in results.items():
        cells, means = [], []
        for task in tasks:
            scores = [r["score"] for r in rows if r["task"] == task]
            means.append(statistics.fmean(scores))
            spread = f" ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
            cells.append(f"{means[-1]:.2f}{spread}")
        step = statistics.median(r["seconds_per_step"] for r in rows)
        flags = VARIANTS[variant] or "(defaults)"
        seeds = ", ".join(map(str, sorted({r["seed"] for r in rows})))
        lines.append(
            f"| {variant} | `{flags}` | {seeds} | "
            + " | ".join(cells)
            + f" | {statistics.fmean(means):.2f} | {step:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=list(PROTOCOLS))
    parser.add_argument("--variants", nargs="+", default=["authors", "pca", "random"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--note", default="", help="a paragraph appended to the .md")
    args = parser.parse_args()
    path = RESULTS / f"llm_scale_accuracy_{args.protocol}.json"
    results = json.loads(path.read_text())["variants"] if path.exists() else {}
    for variant in args.variants:
        results[variant] = run_variant(args.protocol, variant, args.seeds)
    table = summarise(args.protocol, results)
    print(table)
    path.write_text(json.dumps({"protocol": PROTOCOLS[args.protocol], "variants": results}, indent=2) + "\n")
    (RESULTS / f"llm_scale_accuracy_{args.protocol}.md").write_text(
        f"# Projected taps and side heads: accuracy, {args.protocol} protocol\n\n"
        f"`python benchmarks/llm_scale_accuracy.py {args.protocol} --variants ...` (each run "
        "`benchmarks/suite.py table1`, 1 thread, one at a time): best dev score, mean ± std over each row's "
        "seeds; s/step is the median of the variant's runs, measured in turn on a "
        f"shared 2-core machine (compare within a table only, and loosely).\n\n{table}\n"
        + (f"\n{args.note}\n" if args.note else "")
    )


if __name__ == "__main__":
    main()
