"""Where a tap-cached LST step goes on MiniLM-L6 (MRPC, batch 32): the side step with the defaults (MiniLM's own
dropouts, their CPU masks drawn by :mod:`laddertune.core.cpu_dropout`, AdamW's fused kernel), with torch's own CPU
dropout, with the side attention's dropout as it was before (:func:`attention_before`), with torch's per-tensor
AdamW loop, and without the side's hidden-state or attention dropout or both, against the backbone forward the
cache replaces; the default step's top ops; and the side's attention with dropout alone, now and as before.
The variants read the batch's taps padded, as an uncached step's side half does; one reads them packed, as a tap
cache hands them over (:class:`~laddertune.core.packed_tap.PackedTap`: the real tokens' rows only).

    python benchmarks/side_step_profile.py [--steps 10]   # about a minute

Every variant is its own model (same seed, same batch, taps read once) with its own optimizer, as the trainer makes
it (:func:`laddertune.training.optimizer.make_optimizer`); after a warm-up step each, the variants and the backbone
forward take turns step by step, another one first at each step, so that load on the shared machine (and the cold
caches the backbone forward leaves) falls on all of them alike, and each figure is the median of its steps.
Writes benchmarks/results/side_step_profile.{json,md}.
"""

from __future__ import annotations

import argparse
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
from laddertune.core.packed_tap import PackedTap
from laddertune.core.taps import collect_taps
from laddertune.data import load_splits, make_collator
from laddertune.training.build import load_task_backbone
from laddertune.training.optimizer import make_optimizer
from laddertune.training.step import train_step

RESULTS = Path(__file__).parent / "results"
CPU = torch.device("cpu")
PACKED = "defaults, the taps packed as a tap cache hands them over"
# name -> (LadderConfig fields, AdamW fused, the side's CPU dropout: laddertune's, torch's own, or laddertune's with
# its attention as it was before); PACKED reads the taps packed, the others padded
VARIANTS = {
    "defaults": ({}, True, "laddertune"),
    "defaults, torch's CPU dropout (LADDERTUNE_CPU_DROPOUT=torch)": ({}, True, "torch"),
    "defaults, the side attention's dropout as before": ({}, True, "attention before"),
    "defaults, AdamW per-tensor loop (the trainer's before)": ({}, False, "laddertune"),
    "--side-dropout 0": ({"side_dropout": 0.0}, True, "laddertune"),
    "--side-attention-dropout 0": ({"side_attention_dropout": 0.0}, True, "laddertune"),
    "--side-dropout 0 --side-attention-dropout 0": (
        {"side_dropout": 0.0, "side_attention_dropout": 0.0},
        True,
        "laddertune",
    ),
    PACKED: ({}, True, "laddertune"),
}


def attention_before(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """:func:`laddertune.core.cpu_dropout.attention` as it was before, for this benchmark's float32 BERT side (a
    bool padding mask, no causal mask, no grouped heads): the same masks, with the dropout's scale on the
    probabilities and the padding mask applied out of place, in autograd."""
    assert not is_causal and not enable_gqa and (attn_mask is None or attn_mask.dtype == torch.bool)
    scores = query @ key.transpose(-2, -1) * (scale if scale is not None else query.shape[-1] ** -0.5)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return cpu_dropout.dropout(torch.softmax(scores, dim=-1), dropout_p) @ value


def kernels(batch: dict, width: int, reps: int) -> dict:
    """The side's attention with dropout alone (one head, its (B, 1, T, T) probabilities), forward and backward, on
    the default step's shapes, now and as before, taking turns; median milliseconds."""
    b, t = batch["input_ids"].shape
    q, k, v = (torch.randn(b, 1, t, width, requires_grad=True) for _ in range(3))
    mask = batch["attention_mask"].bool()[:, None, None, :].expand(b, 1, t, t)
    cases = {
        "attention with dropout, now": lambda: cpu_dropout.attention(q, k, v, mask, 0.1),
        "attention with dropout, before": lambda: attention_before(q, k, v, mask, 0.1),
    }
    ms = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            ms[name].append(1000 * timed(lambda fn=fn: fn().sum().backward()))
    return {name: statistics.median(v) for name, v in ms.items()}


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
        attention = attention_before if masks == "attention before" else cpu_dropout.attention
        with (
            mock.patch.object(cpu_dropout, "ENABLED", masks != "torch"),
            mock.patch.object(cpu_dropout, "attention", attention),
        ):
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
    taps = collect_taps(probe, **inputs)["body"]  # every variant reads these taps
    mask = batch["attention_mask"].bool()
    packed = {**batch, "taps": {"body": {t: PackedTap(v[mask], mask) for t, v in taps.items()}}}
    batch = {**batch, "taps": {"body": taps}}
    steps, optimizers = {}, {}
    for name, (fields, fused, masks) in VARIANTS.items():
        given = packed if name == PACKED else batch
        optimizers[name], steps[name] = stepper(splits.spec, tok, fields, fused, masks, given)
        steps[name]()  # warm-up: kernels, the allocator, the AdamW state
        optimizers[name].spent.clear()
    seconds = {name: [] for name in (*steps, "backbone forward")}
    turns = [*steps.items(), ("backbone forward", lambda: collect_taps(probe, **inputs))]
    for i in range(args.steps):
        # each step another one goes first: the one right after the backbone forward finds the caches cold
        for name, step in turns[i % len(turns) :] + turns[: i % len(turns)]:
            seconds[name].append(timed(step))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    adamw = {name: statistics.median(opt.spent) for name, opt in optimizers.items()}
    stack = probe.side.stacks["body"]
    attention_ms = kernels(batch, stack.trunk_config.hidden_size, 5 * args.steps)
    with torch.profiler.profile() as prof:
        steps["defaults"]()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    out = {
        "batch": list(batch["input_ids"].shape),
        "real_token_share": batch["attention_mask"].float().mean().item(),
        "side_heads": stack.trunk_config.num_attention_heads,
        "side_width": stack.trunk_config.hidden_size,
        "steps": args.steps,
        "median_s": medians,
        "adamw_median_s": adamw,
        "attention_median_ms": attention_ms,
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
        f"| {name} | {s:.3f} | {s / base:.2f} | {1000 * o['adamw_median_s'][name]:.1f} | "
        + ("|" if name == PACKED else f"{(forward + s) / forward:.2f} |")
        for name, s in o["median_s"].items()
        if name != "backbone forward"
    )
    ops = "\n".join(f"| {e['op']} | {100 * e['share']:.1f}% | {e['calls']} |" for e in o["top_ops_defaults"])
    kernels = "\n".join(f"| {name} | {ms:.2f} |" for name, ms in o["attention_median_ms"].items())
    return f"""# A tap-cached LST step on MiniLM-L6 (MRPC, batch {b} x {t} tokens, r = 8, {o["versions"]["threads"]} threads)

`python benchmarks/side_step_profile.py --steps {o["steps"]}`: every variant its own model and optimizer, taking
turns step by step with the backbone forward, another one first at each step; medians of {o["steps"]} steps each.
{100 * o["real_token_share"]:.0f}% of the batch's positions are real tokens.

| side step (forward, backward, AdamW) | seconds | / defaults | of it AdamW, ms | uncached step / backbone forward |
|---|---:|---:|---:|---:|
{rows}
| backbone forward the cache replaces | {forward:.3f} | | | |

The last column is what an uncached LST step costs against the backbone forward alone: (forward + side step) /
forward (an uncached step's side half reads padded taps, so the packed row has none). The side has
{o["side_heads"]} attention head(s), {o["side_width"]} wide. Top ops of the default step (self CPU time):

| op | share | calls |
|---|---:|---:|
{ops}

The side's attention with dropout alone on this batch's shapes (one head), forward and backward, now and as it was
before (the dropout's scale on the probabilities, the padding mask applied out of place, in autograd), taking
turns ({5 * o["steps"]} each, median):

| attention | ms |
|---|---:|
{kernels}
"""


if __name__ == "__main__":
    main()
