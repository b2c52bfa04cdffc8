"""Instruction tuning of SmolLM2-135M on the shipped instruction sample: LST against LoRA and full fine-tuning.

    python benchmarks/instruction_tuning.py [--methods lst lora full] [--seeds 0 1 2] [--epochs 4] [--batch-size 16]

The data is ``laddertune/data/sample/instructions`` (398 training and 99 validation questions with short answers
that need the backbone's knowledge: capitals, continents, plurals, opposites, chemical symbols, arithmetic in
words; made by ``benchmarks/make_instruction_data.py``), rendered with SmolLM2's chat template, the loss on the
answers only. Every run is ``laddertune train`` in a fresh process with the same budget (epochs, batch, max
length, seed) and each method's default learning rate; evaluation after each epoch generates an answer for every
validation question (greedy, at most 8 new tokens) and the best epoch's exact match is the run's score, as Table 1
takes the best epoch on the dev set. Peak memory is the meter's measured train peak (CPU: the profiler), seconds
per step the run's own mean.

Before training it also measures step 0 in-process: the validation loss and exact match of the backbone alone
and of a freshly built LadderModel (with the final shortcut, whose logits equal the backbone's) and of one built
with the authors' head (``--no-final-shortcut``), to show where each starts.

Writes one JSON per run to ``benchmarks/results/instruction_tuning_smollm2/`` (skipped when present; a run cut off
mid-way resumes from its last checkpoint), then ``benchmarks/results/instruction_tuning_smollm2.json`` (rows and
step 0) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "laddertune" / "data" / "sample" / "instructions"
RESULTS = ROOT / "benchmarks" / "results"
NAME = "instruction_tuning_smollm2"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["lst", "lora", "full"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-args", default="", help="more laddertune train flags for every run")
    p.add_argument(
        "--lst-args",
        default="--loss-chunk-size 128",
        help="LST's own flags (default: its chunked loss, which projects only the answers' positions)",
    )
    p.add_argument("--name", default=NAME)
    p.add_argument("--skip-step0", action="store_true")
    return p.parse_args(argv)


def train_argv(method: str, seed: int, out: Path, args) -> list[str]:
    return [
        "train", "--backbone", "smollm2", "--train-file", str(DATA / "train.jsonl"),
        "--validation-file", str(DATA / "validation.jsonl"), "--method", method, "--seed", str(seed),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
        "--eval-generate", "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads),
        "--memory-steps", "2", "--log-every", "5", "--no-progress", "--output-dir", str(out),
        *args.train_args.split(), *(args.lst_args.split() if method == "lst" else []),
    ]  # fmt: skip


def run(method: str, seed: int, args) -> dict | None:
    folder = RESULTS / args.name
    out_json = folder / f"{method}-s{seed}.json"
    if out_json.is_file():
        print(f"[skip] {out_json.name}", flush=True)
        return json.loads(out_json.read_text())
    out = ROOT / "runs" / args.name / f"{method}-s{seed}"
    argv = train_argv(method, seed, out, args)
    if (out / "checkpoint-last").is_dir():  # a run cut off mid-way continues exactly where it stopped
        argv.append("--resume")
    elif (out / "train_config.json").is_file():
        argv.append("--overwrite")
    print(f"[run ] laddertune {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "laddertune.cli", *argv], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(
            f"[fail] {method} s{seed}: {(done.stderr or done.stdout).strip().splitlines()[-3:]}", flush=True
        )
        return None
    results = json.loads((out / "results.json").read_text())
    best = results["metrics"]["best_validation"]
    row = {
        "method": method,
        "seed": seed,
        "exact_match": best["exact_match"],
        "f1": best["f1"],
        "rougeL": best["rougeL"],
        "validation_loss": best["loss"],
        "best_epoch": results["metrics"]["best_epoch"],
        "per_epoch_exact_match": [r["metrics"]["exact_match"] for r in results["metrics"]["validation"]],
        "peak_train_gib": results["memory"]["peak_train_gib"],
        "seconds_per_step": results["timing"]["seconds_per_step"],
        "steps": results["timing"]["steps"],
        "trainable_percent": results["parameters"]["trainable_percent"],
        "lr": results["effective"]["lr"],
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "command": ["laddertune", *argv],
    }
    folder.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(row, indent=2) + "\n")
    print(f"[done] {method} s{seed}: EM {row['exact_match']:.1f}, peak {row['peak_train_gib']} GiB, "
          f"{row['seconds_per_step']:.2f} s/step", flush=True)  # fmt: skip
    return row


def step0(args) -> dict:
    """Validation loss and exact match before any training: the backbone, LST with and without the shortcut."""
    import torch

    from laddertune import LadderConfig, get_ladder_model
    from laddertune.core.backbones import load_backbone, load_tokenizer
    from laddertune.data.generative_task import GenerativeTask, load_generative_splits
    from laddertune.training.config import GenerationSettings
    from laddertune.training.generative import evaluate_generative, prepare_generative

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("smollm2")
    task = GenerativeTask("prompt_completion")
    splits = load_generative_splits(
        task, train_file=DATA / "train.jsonl", validation_file=DATA / "validation.jsonl"
    )
    data = prepare_generative(
        task, splits, tokenizer, "causal_lm", max_length=args.max_length, max_new_tokens=args.max_new_tokens,
        packing=False,
    )  # fmt: skip
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    out = {}
    for name, build in (
        ("backbone", lambda b: b),
        ("lst (final shortcut)", lambda b: get_ladder_model(b, LadderConfig())),
        ("lst (authors' head)", lambda b: get_ladder_model(b, LadderConfig(final_shortcut=False))),
    ):
        torch.manual_seed(0)
        model = build(load_backbone("smollm2", "causal_lm"))
        scores = evaluate_generative(model, data, tokenizer, batch_size=16, settings=settings, generate=True)
        out[name] = {k: scores[k] for k in ("loss", "perplexity", "exact_match", "f1", "rougeL")}
        print(f"[step0] {name}: {out[name]}", flush=True)
    return out


def summarize(rows: list[dict], start: dict | None, args) -> str:
    by = {m: [r for r in rows if r["method"] == m] for m in args.methods}

    def ms(values):
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}"

    lines = [
        f"# Instruction tuning, SmolLM2-135M ({len(args.seeds)} seeds)",
        "",
        "Command: `python benchmarks/instruction_tuning.py "
        f"--methods {' '.join(args.methods)} --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
        f"--batch-size {args.batch_size} --max-length {args.max_length} --max-new-tokens {args.max_new_tokens}"
        + ("" if args.name == NAME else f" --name {args.name}")
        + "`",
        "",
        "Data: the shipped instruction sample (398 train, 99 validation questions; chat template; loss on the "
        "answers). Score: exact match of the greedy answer on the validation questions, best epoch. "
        f"LST's own flags: `{args.lst_args}`.",
        "",
        "| method | exact match | token F1 | ROUGE-L | validation loss | peak train GiB | s/step | trainable % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, rs in by.items():
        if not rs:
            continue
        lines.append(
            f"| {m} | {ms([r['exact_match'] for r in rs])} | {ms([r['f1'] for r in rs])} | "
            f"{ms([r['rougeL'] for r in rs])} | {ms([r['validation_loss'] for r in rs])} | "
            f"{ms([r['peak_train_gib'] for r in rs])} | {ms([r['seconds_per_step'] for r in rs])} | "
            f"{rs[0]['trainable_percent']:.3f} |"
        )
    lines += ["", "Per seed (exact match per epoch):", ""]
    lines += [f"- {r['method']} seed {r['seed']}: {', '.join(f'{x:.1f}' for x in r['per_epoch_exact_match'])}"
              for r in rows]  # fmt: skip
    if start:
        lines += ["", "Step 0 (before training):", "", "| model | validation loss | exact match | token F1 |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {k} | {v['loss']:.4f} | {v['exact_match']:.2f} | {v['f1']:.2f} |" for k, v in start.items()
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    summary_path = RESULTS / f"{args.name}.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    start = previous.get("step0")
    if start is None and not args.skip_step0:
        start = step0(args)
        summary_path.write_text(json.dumps({"step0": start, "rows": []}, indent=2) + "\n")
    rows = [r for m in args.methods for s in args.seeds if (r := run(m, s, args)) is not None]
    summary_path.write_text(json.dumps({"step0": start, "rows": rows}, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(summarize(rows, start, args))
    print((RESULTS / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
