"""Where a tap-cached LST step goes on MiniLM-L6 (MRPC, batch 32): the side step with the defaults (MiniLM's own
dropouts, their CPU masks drawn by :mod:`laddertune.core.cpu_dropout`, AdamW's fused kernel), with torch's own CPU
dropout, with laddertune's CPU dropout as it was before (bool masks and ``torch.where``, the attention's scales
on its largest tensors), with torch's per-tensor AdamW loop, and without the side's hidden-state or attention
dropout or both, against the backbone forward the cache replaces; and the default step's top ops.

    python benchmarks/side_step_profile.py [--steps 10]   # about a minute

Every variant is its own model (same seed, same batch, taps read once) with its own optimizer, as the trainer makes
it (:func:`laddertune.training.optimizer.make_optimizer`); after a warm-up step each, the variants and the backbone
forward take turns step by step, so that load on the shared machine falls on all of them alike, and each figure
is the median of its steps. Writes benchmarks/results/side_step_profile.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from laddertune import LadderConfig, get_ladder_model
from laddertune.core import cpu_dropout
from laddertune.core.backbones import load_tokenizer
from laddertune.core.taps import collect_taps
from laddertune.data import load_splits, make_collator
from laddertune.training.build import load_task_backbone
from laddertune.training.optimizer import make_optimizer
from laddertune.training.step import train_step

RESULTS = Path(__file__).parent / "results"
CPU = torch.device("cpu")
# name -> (LadderConfig fields, AdamW fused, the side's CPU dropout: laddertune's, torch's own, or laddertune's
# as it was before: the same draws applied through a bool mask and torch.where, the attention's scales on the
# scores and probabilities, its mask in autograd)
VARIANTS = {
    "defaults": ({}, True, "laddertune"),
    "defaults, torch's CPU dropout (LADDERTUNE_CPU_DROPOUT=torch)": ({}, True, "torch"),
    "defaults, laddertune's CPU dropout as before (bool masks, torch.where)": ({}, True, "where"),
    "defaults, AdamW per-tensor loop (the trainer's before)": ({}, False, "laddertune"),
    "--side-dropout 0": ({"side_dropout": 0.0}, True, "laddertune"),
    "--side-attention-dropout 0": ({"side_attention_dropout": 0.0}, True, "laddertune"),
    "--side-dropout 0 --side-attention-dropout 0": (
        {"side_dropout": 0.0, "side_attention_dropout": 0.0},
        True,
        "laddertune",
    ),
}


class WhereDropout(torch.autograd.Function):
    """laddertune's CPU dropout as it applied its masks before: the same draws, a bool mask, ``torch.where``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        cut = min(round(p * cpu_dropout.LEVELS), cpu_dropout.LEVELS - 1)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = words.view(torch.int16)[:n].view(x.shape) >= cut - cpu_dropout.LEVELS // 2
        ctx.save_for_backward(keep)
        ctx.scale = cpu_dropout.LEVELS / (cpu_dropout.LEVELS - cut)
        return torch.where(keep, x, 0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None


def where_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """The side's attention with dropout as laddertune computed it before, for this benchmark's float32 BERT side
    (a bool padding mask, no causal mask, no grouped heads): the scale on the scores, the mask in autograd, the
    dropout's scale on the probabilities."""
    assert not is_causal and not enable_gqa and (attn_mask is None or attn_mask.dtype == torch.bool)
    scores = query @ key.transpose(-2, -1) * (scale if scale is not None else query.shape[-1] ** -0.5)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return WhereDropout.apply(torch.softmax(scores, dim=-1), dropout_p) @ value


def stepper(spec, tok, fields: dict, fused: bool, masks: str, batch: dict):
    torch.manual_seed(0)
    backbone = load_task_backbone("minilm", spec, "sequence_classification", tok)
    model = get_ladder_model(backbone, LadderConfig(**fields)).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, "adamw", lr=1e-3, weight_decay=0.0, device=CPU)
    if not fused:  # torch's CPU default: a Python loop over the tensors
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=None, foreach=False)
    opt.spent, started = [], []  # the AdamW update's own seconds, apart
    opt.register_step_pre_hook(lambda *_: started.append(time.perf_counter()))
    opt.register_step_post_hook(lambda *_: opt.spent.append(time.perf_counter() - started.pop()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def step():
        with contextlib.ExitStack() as patches:
            patches.enter_context(mock.patch.object(cpu_dropout, "ENABLED", masks != "torch"))
            if masks == "where":
                patches.enter_context(mock.patch.object(cpu_dropout, "dropout", WhereDropout.apply))
                patches.enter_context(mock.patch.object(cpu_dropout, "attention", where_attention))
            return train_step(model, batch, opt, sched, 1.0)

    return opt, step


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--data-dir", default=os.environ.get("LADDERTUNE_DATA_DIR", "/work/shared/data/glue"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    splits = load_splits("mrpc", data_dir=args.data_dir, max_train_samples=64, seed=42)
    tok = load_tokenizer("minilm")
    batch = make_collator(tok, fmt="classification", spec=splits.spec, max_length=128)(splits.train[:32])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    probe = get_ladder_model(load_task_backbone("minilm", splits.spec, "sequence_classification", tok))
    batch = {**batch, "taps": collect_taps(probe, **inputs)}  # every variant reads these taps
    steps, optimizers = {}, {}
    for name, (fields, fused, masks) in VARIANTS.items():
        optimizers[name], steps[name] = stepper(splits.spec, tok, fields, fused, masks, batch)
        steps[name]()  # warm-up: kernels, the allocator, the AdamW state
        optimizers[name].spent.clear()
    seconds = {name: [] for name in (*steps, "backbone forward")}
    for _ in range(args.steps):
        for name, step in steps.items():
            seconds[name].append(timed(step))
        seconds["backbone forward"].append(timed(lambda: collect_taps(probe, **inputs)))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    adamw = {name: statistics.median(opt.spent) for name, opt in optimizers.items()}
    with torch.profiler.profile() as prof:
        steps["defaults"]()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    stack = probe.side.stacks["body"]
    out = {
        "batch": list(batch["input_ids"].shape),
        "real_token_share": batch["attention_mask"].float().mean().item(),
        "side_heads": stack.trunk_config.num_attention_heads,
        "side_width": stack.trunk_config.hidden_size,
        "steps": args.steps,
        "median_s": medians,
        "adamw_median_s": adamw,
        "top_ops_defaults": [
            {"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in ops[:8]
        ],
        "versions": {"torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "side_step_profile.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "side_step_profile.md").write_text(markdown(out))
    print(markdown(out))


def markdown(o: dict) -> str:
    b, t = o["batch"]
    base = o["median_s"]["defaults"]
    forward = o["median_s"]["backbone forward"]
    rows = "\n".join(
        f"| {name} | {s:.3f} | {s / base:.2f} | {1000 * o['adamw_median_s'][name]:.1f} | {(forward + s) / forward:.2f} |"
        for name, s in o["median_s"].items()
        if name != "backbone forward"
    )
    ops = "\n".join(f"| {e['op']} | {100 * e['share']:.1f}% | {e['calls']} |" for e in o["top_ops_defaults"])
    return f"""# A tap-cached LST step on MiniLM-L6 (MRPC, batch {b} x {t} tokens, r = 8, {o["versions"]["threads"]} threads)

`python benchmarks/side_step_profile.py --steps {o["steps"]}`: every variant its own model and optimizer, taking
turns step by step with the backbone forward; medians of {o["steps"]} steps each.
{100 * o["real_token_share"]:.0f}% of the batch's positions are real tokens.

| side step (forward, backward, AdamW) | seconds | / defaults | of it AdamW, ms | uncached step / backbone forward |
|---|---:|---:|---:|---:|
{rows}
| backbone forward the cache replaces | {forward:.3f} | | | |

The last column is what an uncached LST step costs against the backbone forward alone: (forward + side step) /
forward. The side has {o["side_heads"]} attention head(s), {o["side_width"]} wide. Top ops of the default step
(self CPU time):

| op | share | calls |
|---|---:|---:|
{ops}
"""


if __name__ == "__main__":
    main()
