"""Which LST settings suit instruction tuning: a screen by validation loss on the instruction sample (SmolLM2).

    python benchmarks/lst_lm_settings.py [--variants default r4 r2 lr1e-2 lr1e-3 ...] [--seed 0] [--epochs 4]

Every variant is ``laddertune train --method lst`` on ``laddertune/data/sample/instructions`` with SmolLM2's chat
template, the same budget (epochs, batch 16, length 96, seed) and a shared tap cache (float32: training reads the
backbone's taps, so only the side network's steps are paid per variant; the results equal uncached runs). The
score is the best epoch's validation loss (the mean over the answers' tokens; lower is better), which costs one
forward of the validation rows; generation is left to benchmarks/instruction_tuning.py. Writes
``benchmarks/results/lst_lm_settings.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "laddertune" / "data" / "sample" / "instructions"
RESULTS = ROOT / "benchmarks" / "results"
# every side layer, full-width taps, the backbone's heads
AUTHORS = ["--side-layer-stride", "1", "--tap-projection", "none", "--side-attention-heads", "0"]
VARIANTS = {
    "default": [],  # projected (pca) taps, side heads 64 wide, a side layer on every other of the 30 layers
    "every-layer": ["--side-layer-stride", "1"],
    "full-taps": ["--side-layer-stride", "1", "--tap-projection", "none"],
    "authors": AUTHORS,
    "authors-r4": [*AUTHORS, "--reduction-factor", "4"],
    "authors-r2": [*AUTHORS, "--reduction-factor", "2"],
    "authors-lr1e-2": [*AUTHORS, "--lr", "1e-2"],
    "authors-lr1e-3": [*AUTHORS, "--lr", "1e-3"],
    "authors-no-shortcut": [*AUTHORS, "--no-final-shortcut"],
    "authors-gate": [*AUTHORS, "--final-gate"],
    "r4": ["--reduction-factor", "4"],
    "lr1e-3": ["--lr", "1e-3"],
    "attn-dropout": ["--side-attention-dropout", "0.1"],
    "wd0.1": ["--weight-decay", "0.1"],
    "magnitude": ["--init", "magnitude"],  # the side starts as the backbone pruned by weight magnitude
    "authors-magnitude": [*AUTHORS, "--init", "magnitude"],
    # the paper's layer dropping (Section 3.4): side layers on every other backbone layer (2nd, 4th, ... of 30)
    "half-layers": ["--side-layers", ",".join(str(i) for i in range(1, 30, 2))],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    out_json = RESULTS / "lst_lm_settings.json"
    rows = json.loads(out_json.read_text()) if out_json.is_file() else []
    done = {(r["variant"], r["seed"], r["epochs"]) for r in rows}
    for name in args.variants:
        if (name, args.seed, args.epochs) in done:
            continue
        out = ROOT / "runs" / "lst_lm_settings" / f"{name}-s{args.seed}-e{args.epochs}"
        argv_ = [
            "train", "--backbone", "smollm2", "--train-file", str(DATA / "train.jsonl"),
            "--validation-file", str(DATA / "validation.jsonl"), "--method", "lst", "--seed", str(args.seed),
            "--epochs", str(args.epochs), "--batch-size", "16", "--max-length", "96", "--loss-chunk-size", "128",
            "--tap-cache", str(ROOT / "runs" / "lst_lm_settings" / "tap_cache"), "--threads", str(args.threads),
            "--memory-steps", "0", "--no-progress", "--overwrite", "--output-dir", str(out), *VARIANTS[name],
        ]  # fmt: skip
        print("[run ]", name, flush=True)
        done_ = subprocess.run(
            [sys.executable, "-m", "laddertune.cli", *argv_], cwd=ROOT, capture_output=True, text=True
        )
        if done_.returncode != 0:
            print("[fail]", name, done_.stderr.strip().splitlines()[-1:], flush=True)
            continue
        results = json.loads((out / "results.json").read_text())
        losses = [r["metrics"]["loss"] for r in results["metrics"]["validation"]]
        row = {"variant": name, "flags": VARIANTS[name], "seed": args.seed, "epochs": args.epochs,
               "validation_loss_per_epoch": losses, "best_loss": min(losses),
               "trainable": results["parameters"]["trainable"], "seconds_per_step": results["timing"]["seconds_per_step"]}  # fmt: skip
        rows.append(row)
        out_json.write_text(json.dumps(rows, indent=2) + "\n")
        print(
            f"[done] {name}: best loss {row['best_loss']:.4f} ({', '.join(f'{x:.3f}' for x in losses)})",
            flush=True,
        )
    lines = [
        "# LST settings for instruction tuning (SmolLM2, validation loss on the answers; lower is better)",
        "",
        "Command, per row: `python benchmarks/lst_lm_settings.py --variants VARIANT --seed SEED --epochs EPOCHS` "
        "with the row's values (a variant already in the JSON at that seed and epochs is skipped). Rows run before "
        "`--side-layer-stride` existed, when a side layer on every backbone layer was the default, list "
        "`--side-layer-stride 1`: the same model.",
        "",
        "| variant | flags | seed | epochs | loss per epoch | best | trainable params |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | `{' '.join(r['flags']) or '(defaults)'}` | {r['seed']} | {r['epochs']} | "
        f"{', '.join(f'{x:.3f}' for x in r['validation_loss_per_epoch'])} | {r['best_loss']:.4f} | {r['trainable']:,} |"
        for r in rows
    ]
    (RESULTS / "lst_lm_settings.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
