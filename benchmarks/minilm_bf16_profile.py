"""Where a bf16 LST step on MiniLM spends its time on this CPU, against fp32 (torch.profiler op tables).

The README's SST-2 setting (batch 32, max length 128, padded to the batch's longest: SST-2 sentences are short),
LST r=8 on MiniLM. For each setting: 2 warm-up steps, then ``--steps`` steps timed without any profiler, then the
same number of steps under ``torch.profiler`` (CPU ops, no memory) for the op table. Writes
``results/minilm_bf16_profile.json`` (+ ``.md``)::

    python benchmarks/minilm_bf16_profile.py --steps 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer
from laddertune.training.precision import Precision
from laddertune.training.step import train_step

RESULTS = Path(__file__).parent / "results"
DATA = Path("/work/shared/data/glue/sst2/train.jsonl")
SETTINGS = {
    "fp32": dict(precision="fp32", backbone_dtype="float32"),
    "bf16 backbone + bf16 autocast": dict(precision="bf16", backbone_dtype="bfloat16"),
    "fp32 backbone + bf16 autocast": dict(precision="bf16", backbone_dtype="float32"),
    "bf16 backbone + fp32 compute": dict(precision="fp32", backbone_dtype="bfloat16"),
}


def batches(tokenizer, n: int, batch_size: int, max_length: int) -> list[dict]:
    rows = [json.loads(line) for line in DATA.open()][: n * batch_size]
    out = []
    for k in range(n):
        chunk = rows[k * batch_size : (k + 1) * batch_size]
        enc = tokenizer(
            [r["sentence"] for r in chunk],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out.append({**enc, "labels": torch.tensor([r["label"] for r in chunk])})
    return out


def run(setting: dict, data: list[dict], steps: int, top: int) -> dict:
    torch.manual_seed(0)
    backbone = load_backbone("minilm", "sequence_classification", num_labels=2)
    model = get_ladder_model(backbone, LadderConfig(backbone_dtype=setting["backbone_dtype"]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    sched = get_linear_schedule_with_warmup(opt, 0, 1000)
    precision = Precision(setting["precision"], torch.device("cpu"))
    for b in data[:2]:
        train_step(model, b, opt, sched, 1.0, precision)
    start = time.perf_counter()
    for b in data[2 : 2 + steps]:
        train_step(model, b, opt, sched, 1.0, precision)
    seconds = (time.perf_counter() - start) / steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for b in data[2 : 2 + steps]:
            train_step(model, b, opt, sched, 1.0, precision)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    table = [
        {
            "op": e.key,
            "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
            "share": e.self_cpu_time_total / total,
            "calls_per_step": e.count / steps,
        }
        for e in rows
    ]
    return {
        "settings": setting,
        "seconds_per_step": seconds,
        "profiled_self_ms_per_step": total / 1000 / steps,
        "top_ops": table,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    args = ap.parse_args()
    tokenizer = load_tokenizer("minilm")
    data = batches(tokenizer, 2 + args.steps, args.batch_size, args.max_length)
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_bf16_supported": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        "batch_size": args.batch_size,
        "mean_tokens": sum(b["input_ids"].shape[1] for b in data) / len(data),
        "steps": args.steps,
        "runs": {},
    }
    for name in args.settings.split(","):
        r = run(SETTINGS[name], data, args.steps, args.top)
        out["runs"][name] = r
        print(f"== {name}: {r['seconds_per_step']:.3f} s/step", flush=True)
        for row in r["top_ops"]:
            print(
                f"   {row['op']:<40} {row['self_ms_per_step']:8.1f} ms  {100 * row['share']:5.1f}%  x{row['calls_per_step']:.0f}"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "minilm_bf16_profile.json").write_text(json.dumps(out, indent=2) + "\n")
    base = out["runs"].get("fp32", {}).get("seconds_per_step")
    lines = [
        "# MiniLM LST step on CPU: fp32 vs bf16, where the time goes",
        "",
        f"Command: `python benchmarks/minilm_bf16_profile.py --steps {args.steps}`; "
        f"torch {out['torch']}, {out['threads']} threads, CPU capability {out['cpu_capability']}, "
        f"mkldnn bf16 supported: {out['mkldnn_bf16_supported']}; SST-2 batches of {args.batch_size} "
        f"(mean {out['mean_tokens']:.0f} tokens after padding).",
        "",
        "| setting | s/step | x fp32 | top self-time ops (ms/step) |",
        "|---|---|---|---|",
    ]
    for name, r in out["runs"].items():
        ops = ", ".join(f"{o['op']} {o['self_ms_per_step']:.0f}" for o in r["top_ops"][:5])
        ratio = f"{r['seconds_per_step'] / base:.2f}" if base else ""
        lines.append(f"| {name} | {r['seconds_per_step']:.3f} | {ratio} | {ops} |")
    (RESULTS / "minilm_bf16_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
