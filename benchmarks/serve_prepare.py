"""The checkpoints the serving benchmark serves: four SmolLM2 tasks, each as an LST side network and a LoRA adapter.

    python benchmarks/serve_prepare.py [--steps 6] [--threads 2] [--classifier]

The shipped instruction sample (``laddertune/data/sample/instructions``) is split by question kind into four tasks
(capital, plural, opposite, arithmetic); each is trained for ``--steps`` optimizer steps (batch 8, max length 96,
LST's default learning rate, seed = the task's index) with ``laddertune train --method lst`` in a fresh process.
The runs are short: a serving benchmark needs side networks of a trained model's shape and answers, not good ones.

The PEFT multi-adapter baseline serves four LoRA adapters of the same shape as ``laddertune train --method lora``
makes (``prepare_baseline(backbone, "lora")``: rank 8 on q_proj and v_proj), written as PEFT adapter folders
(``save_pretrained``, read by ``PeftModel.load_adapter``). They are NOT trained (training LoRA backpropagates
through the backbone: minutes per step on the shared CPU cores); their B matrices are seeded noise (std 0.02)
instead of PEFT's zeros, so the four adapters differ and every LoRA matmul runs as in a trained adapter. Their
answers are not the LST side networks' answers, so the benchmark compares tokens per second and reports each
configuration's mean answer length beside it.

``--classifier`` trains a classification side network too (which of six kinds a question is), to try the server
with LM and classification heads mixed on the one backbone.

Everything goes to ``runs/serve_bench/`` (a run already there is kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "laddertune" / "data" / "sample" / "instructions"
OUT = ROOT / "runs" / "serve_bench"
TASKS = ("capital", "plural", "opposite", "arithmetic")


def split_data() -> None:
    """One prompt/completion file per task, and one classification file of every question's kind."""
    folder = OUT / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]
        for task in TASKS:
            mine = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows if r["task"] == task]
            (folder / f"{task}-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
        kinds = [{"text": r["prompt"], "label": r["task"]} for r in rows]
        (folder / f"kind-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kinds))


def train(name: str, method: str, files: str, seed: int, args, extra=()) -> None:
    out = OUT / name
    if (out / "checkpoint-best" / "task.json").is_file():
        print(f"[keep] {name}", flush=True)
        return
    argv = [
        "train", "--backbone", "smollm2", "--train-file", str(OUT / "data" / f"{files}-train.jsonl"),
        "--validation-file", str(OUT / "data" / f"{files}-validation.jsonl"), "--method", method,
        "--seed", str(seed), "--max-steps", str(args.steps), "--batch-size", "8", "--max-length", "96",
        "--threads", str(args.threads), "--memory-steps", "0", "--no-progress", "--output-dir", str(out),
        "--overwrite", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "laddertune.cli", *argv], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{name}: {(done.stderr or done.stdout).strip().splitlines()[-3:]}")
    print(f"[done] {name} in {time.perf_counter() - t0:.0f} s", flush=True)


def peft_adapters() -> None:
    """Four seeded LoRA adapters of SmolLM2 as PEFT folders (``runs/serve_bench/peft-<task>``)."""
    if all((OUT / f"peft-{t}" / "adapter_config.json").is_file() for t in TASKS):
        return
    import torch

    from laddertune.baselines import prepare_baseline
    from laddertune.core.backbones import load_backbone

    for seed, task in enumerate(TASKS):
        model = prepare_baseline(load_backbone("smollm2", "causal_lm"), "lora")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        model.save_pretrained(OUT / f"peft-{task}")  # PEFT's own adapter folder
        print(f"[peft] {task}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--classifier", action="store_true")
    args = p.parse_args(argv)
    split_data()
    for i, task in enumerate(TASKS):
        train(f"lst-{task}", "lst", task, i, args, ("--loss-chunk-size", "128"))
    if args.classifier:
        train("lst-kind", "lst", "kind", 7, args, ("--format", "classification"))
    peft_adapters()


if __name__ == "__main__":
    main()
