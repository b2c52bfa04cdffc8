"""Where a tap-cached LST step goes on MiniLM-L6 (MRPC, batch 32): side step with and without attention dropout,
against the backbone forward it replaces, and the step's top ops.

    python benchmarks/side_step_profile.py   # about a minute

Run on an idle machine (the tap cache benchmark's figures were taken under load). Writes
benchmarks/results/side_step_profile.{json,md}.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_tokenizer
from laddertune.core.taps import collect_taps
from laddertune.data import load_splits, make_collator
from laddertune.training.build import load_task_backbone
from laddertune.training.step import train_step

RESULTS = Path(__file__).parent / "results"


def seconds_per_step(model, batch: dict, n: int = 6) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    train_step(model, batch, opt, sched, 1.0)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        train_step(model, batch, opt, sched, 1.0)
    return (time.perf_counter() - t0) / n


def main() -> None:
    torch.set_num_threads(2)
    data_dir = os.environ.get("LADDERTUNE_DATA_DIR", "/work/shared/data/glue")
    splits = load_splits("mrpc", data_dir=data_dir, max_train_samples=64, seed=42)
    tok = load_tokenizer("minilm")
    batch = make_collator(tok, fmt="classification", spec=splits.spec, max_length=128)(splits.train[:32])
    torch.manual_seed(0)
    model = get_ladder_model(
        load_task_backbone("minilm", splits.spec, "sequence_classification", tok), LadderConfig()
    )
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    cached = {**batch, "taps": collect_taps(model, **inputs)}
    model.train()
    out = {
        "batch": list(batch["input_ids"].shape),
        "side_heads": model.side.stacks["body"].trunk.config.num_attention_heads,
    }
    out["side_step_s_attn_dropout_0.1"] = seconds_per_step(model, cached)
    for name, module in model.side.named_modules():
        if name.endswith("attention.self.dropout"):
            module.p = 0.0
    out["side_step_s_attn_dropout_0"] = seconds_per_step(model, cached)
    t0 = time.perf_counter()
    for _ in range(6):
        collect_taps(model, **inputs)
    out["backbone_forward_s"] = (time.perf_counter() - t0) / 6
    with torch.profiler.profile() as prof:
        seconds_per_step(model, cached, n=1)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    out["top_ops_attn_dropout_0"] = [
        {"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in ops[:6]
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "side_step_profile.json").write_text(json.dumps(out, indent=2) + "\n")
    rows = "\n".join(
        f"| {o['op']} | {100 * o['share']:.1f}% | {o['calls']} |" for o in out["top_ops_attn_dropout_0"]
    )
    (RESULTS / "side_step_profile.md").write_text(
        f"""# A tap-cached LST step on MiniLM-L6 (MRPC, batch {out["batch"][0]} x {out["batch"][1]} tokens, r = 8, 2 threads)

`python benchmarks/side_step_profile.py`, idle machine.

| | seconds |
|---|---|
| side step (forward, backward, AdamW), side attention dropout 0.1 (the default) | {out["side_step_s_attn_dropout_0.1"]:.3f} |
| the same, side attention dropout 0 | {out["side_step_s_attn_dropout_0"]:.3f} |
| backbone forward the cache replaces | {out["backbone_forward_s"]:.3f} |

The side has {out["side_heads"]} attention head(s) of {384 // 8 // out["side_heads"]} (width 384 / 8 = 48). Top ops of the step with attention
dropout 0 (self CPU time; the rest of the step is many small elementwise ops):

| op | share | calls |
|---|---|---|
{rows}
"""
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
