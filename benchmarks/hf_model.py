"""A LadderModel inside the Hugging Face ecosystem: what a plain ``Trainer`` saves, and greedy generation speed.

    flock /tmp/laddertune-bench.lock python benchmarks/hf_model.py save-size
    flock /tmp/laddertune-bench.lock python benchmarks/hf_model.py generation [--baseline-src /tmp/lt-6149ce4]

``save-size``: an LST MiniLM-L6 classifier (r=8, 2 labels) trained for 2 steps by a plain ``transformers.Trainer``,
then ``trainer.save_model(dir)``; reports the bytes of the weight files and of the whole folder.

``generation``: greedy tokens/s of a SmolLM2-135M LadderModel (r=8, every layer, fresh side network) on 4 fixed
chat prompts, left-padded, exactly ``--new-tokens`` new tokens each (``min_new_tokens`` = ``max_new_tokens``). Each
implementation runs in its own process with one torch thread, one warm-up call, then ``--repeats`` timed calls; the
median counts. ``--baseline-src`` names a source tree of laddertune before the move to transformers' ``generate()``
(``git archive 6149ce4 | tar -x -C DIR``): its hand-written loop runs the same prompts, alternating with this tree's,
and the backbone's own ``generate`` runs as a reference. Writes ``results/hf_model_<part>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Write a haiku about autumn leaves.",
    "What is the capital of France? Answer in one sentence.",
    "Explain gradient descent to a ten-year-old.",
    "List three uses of a paperclip.",
]


def _folder_bytes(folder: Path) -> dict:
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    weights = {n: s for n, s in files.items() if n.endswith((".safetensors", ".bin", ".pt", ".pth"))}
    return {"files": files, "weight_bytes": sum(weights.values()), "folder_bytes": sum(files.values())}


def save_size() -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    from laddertune import LadderConfig, get_ladder_model
    from laddertune.core.backbones import load_backbone, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer("minilm")
    model = get_ladder_model(load_backbone("minilm", "sequence_classification", num_labels=2), LadderConfig())
    enc = tokenizer(["a good film", "a bad film"] * 4, padding=True, return_tensors="pt")
    data = [
        {"input_ids": i, "attention_mask": m, "labels": torch.tensor(k % 2)}
        for k, (i, m) in enumerate(zip(enc["input_ids"], enc["attention_mask"], strict=True))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True,
            save_strategy="no", disable_tqdm=True,
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=data)
        trainer.train()
        trainer.save_model(f"{tmp}/final")
        sizes = _folder_bytes(Path(tmp) / "final")
    side = sum(p.numel() for p in model.side.parameters())
    return {
        "backbone": "minilm (all-MiniLM-L6-v2), sequence_classification, 2 labels",
        "ladder": "LadderConfig() defaults (r=8, every layer)",
        "side_parameters": side,
        **sizes,
        "weight_mb": sizes["weight_bytes"] / 1e6,
        "folder_mb": sizes["folder_bytes"] / 1e6,
    }


def _generation_worker(kind: str, new_tokens: int, repeats: int) -> dict:
    """One implementation in this process: ``ladder`` (this tree's or the baseline's LadderModel) or ``backbone``."""
    import torch

    torch.set_num_threads(1)
    from laddertune import LadderConfig, get_ladder_model
    from laddertune.core.backbones import load_backbone, load_tokenizer

    tokenizer = load_tokenizer("smollm2")
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    backbone = load_backbone("smollm2", "causal_lm").eval()
    torch.manual_seed(0)
    model = backbone if kind == "backbone" else get_ladder_model(backbone, LadderConfig()).eval()
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    def run():
        with torch.no_grad():
            return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw)

    run()  # warm-up
    seconds, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        seconds.append(time.perf_counter() - start)
    new = out[:, batch["input_ids"].shape[1] :]
    median = statistics.median(seconds)
    return {
        "prompt_tokens": int(batch["attention_mask"].sum()),
        "batch": len(PROMPTS),
        "new_tokens": int(new.numel()),
        "seconds": seconds,
        "median_seconds": median,
        "tokens_per_second": new.numel() / median,
        "tokens": new.tolist(),
    }


def _run_worker(kind: str, src: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", kind,
           "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=src, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def generation(args) -> dict:
    runs: dict[str, list[dict]] = {"ladder_generate": [], "hand_written_loop": [], "backbone_generate": []}
    for _ in range(args.rounds):  # alternate, so slow phases of a shared machine hit every implementation
        runs["ladder_generate"].append(_run_worker("ladder", ROOT, args))
        if args.baseline_src:
            runs["hand_written_loop"].append(_run_worker("ladder", Path(args.baseline_src), args))
        runs["backbone_generate"].append(_run_worker("backbone", ROOT, args))
    summary = {}
    for name, rs in runs.items():
        if rs:
            summary[name] = {
                "tokens_per_second": [r["tokens_per_second"] for r in rs],
                "best_tokens_per_second": max(r["tokens_per_second"] for r in rs),
                "tokens": rs[0]["tokens"],
            }
    result = {
        "backbone": "smollm2 (SmolLM2-135M-Instruct, GGUF Q4_1 dequantised to float32), causal_lm",
        "ladder": "LadderConfig() defaults (r=8, every layer, final shortcut)",
        "prompts": PROMPTS,
        "new_tokens_per_prompt": args.new_tokens,
        "threads": 1,
        "rounds": args.rounds,
        "repeats_per_round": args.repeats,
        "runs": summary,
    }
    if args.baseline_src:
        new, old = summary["ladder_generate"], summary["hand_written_loop"]
        result["speed_ratio_generate_over_loop"] = (
            new["best_tokens_per_second"] / old["best_tokens_per_second"]
        )
        result["same_tokens_as_loop"] = new["tokens"] == old["tokens"]
    result["same_tokens_as_backbone"] = (
        summary["ladder_generate"]["tokens"] == summary["backbone_generate"]["tokens"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["save-size", "generation", "_worker"])
    parser.add_argument("kind", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--baseline-src", help="a source tree of laddertune with the hand-written decoding loop"
    )
    args = parser.parse_args()
    if args.part == "_worker":
        print(json.dumps(_generation_worker(args.kind, args.new_tokens, args.repeats)))
        return
    result = save_size() if args.part == "save-size" else generation(args)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"hf_model_{args.part.replace('-', '_')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    shown = {k: v for k, v in result.items() if k not in ("runs", "files", "prompts")}
    if "runs" in result:
        shown["tokens_per_second"] = {k: v["tokens_per_second"] for k, v in result["runs"].items()}
    print(json.dumps(shown, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
