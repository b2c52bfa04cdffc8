"""The tap cache on MiniLM-L6, MRPC: cached LST epoch vs uncached LST epoch vs full fine-tuning epoch, a seeds x r sweep.

    python benchmarks/tap_cache_minilm.py \
        [--data-dir /work/shared/data/glue] [--examples 160] [--batch-size 32] [--turns 7] [--side-dropout P] \
        [--side-attention-dropout P] [--side-attention-heads N]

Budget: a few minutes on 2 shared CPU cores, so an "epoch" is the first ``--examples`` MRPC training pairs (160: 5
steps of 32, inputs up to 128 tokens, padded per batch), not the 3,668 of the full set; every figure below is measured
in this one process, side by side, on the same batches:

1. uncached LST epoch (r=8, seed 0), timed per step;
2. building the tap cache (float32) over those examples: seconds and bytes on disk;
3. the same LST epoch read from the cache, each batch's taps read right before its step, as the trainer's data path
   reads them (same seed, so the losses must match the uncached ones);
4. full fine-tuning epoch at the same batch;
5. where the limit lies: the backbone forward alone (uncached, ``collect_taps``) per batch against the LST step;
6. a sweep of 3 seeds x 2 reduction factors (r = 8, 16), one epoch each, from the one cache vs uncached;
7. 4 side networks from one backbone pass vs 4 separate models (inference on the same batches, rows/s);
8. the two ratios the speed goals are stated in (a cached epoch over an uncached one, an uncached epoch over the
   backbone forward), from ``--turns`` rounds in which the three take turns: an epoch here lasts half a second to
   two, and one timing of it can be a fifth off, as load on the shared machine comes and goes. Two estimates: the
   median of the rounds' ratios, and the ratio of the fastest rounds. Load only ever adds time, so the fastest
   round of each is the closest to what the machine does undisturbed (the reading ``timeit``'s documentation
   gives its minimum), and here load slows the cached epoch (many small, memory-bound operations) more than the
   uncached one (the backbone's large matrix products).

Every model trains with AdamW as the trainer makes it (:func:`laddertune.training.optimizer.make_optimizer`).
Writes benchmarks/results/tap_cache_minilm.json and .md (with ``--side-dropout P``: every LST model of the run,
cached and uncached, gets that side dropout, and the files are ``tap_cache_minilm_dropout<P>``;
``--side-attention-dropout P`` and ``--side-attention-heads N`` likewise add ``_attn_dropout<P>`` and
``_heads<N>``; with ``LADDERTUNE_CPU_DROPOUT=torch``, torch's own CPU dropout in the side, ``_torch_dropout``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from laddertune import LadderConfig, MultiSideModel, get_ladder_model
from laddertune.baselines import prepare_baseline
from laddertune.core import cpu_dropout
from laddertune.core.backbones import load_tokenizer
from laddertune.core.taps import collect_taps
from laddertune.data import load_splits, make_collator
from laddertune.taps import open_tap_cache
from laddertune.training.build import epoch_batches, load_task_backbone
from laddertune.training.loop import train_step
from laddertune.training.optimizer import make_optimizer

RESULTS = Path(__file__).parent / "results"
SIDE_OPTIONS: dict = {}  # LadderConfig fields every LST model of the run gets (set once from the command line)


def make(method: str, spec, tok, r: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    backbone = load_task_backbone("minilm", spec, "sequence_classification", tok)
    if method == "lst":
        return get_ladder_model(backbone, LadderConfig(reduction_factor=r, **SIDE_OPTIONS))
    return prepare_baseline(backbone, method)


def epoch(model, batches: list[dict], lr: float, read=None) -> tuple[float, list[float], float]:
    """One epoch of AdamW steps; returns (seconds, losses, of the seconds those spent reading taps). With ``read``
    (a tap cache's), each batch's taps are read right before its step, as the trainer's data path does."""
    params = [p for p in model.parameters() if p.requires_grad]
    # AdamW as the trainer makes it
    opt = make_optimizer(params, "adamw", lr=lr, weight_decay=0.0, device=torch.device("cpu"))
    sched = get_linear_schedule_with_warmup(opt, 0, len(batches))
    model.train()
    losses, reading, t0 = [], 0.0, time.perf_counter()
    for batch in batches:
        if read is not None:
            t = time.perf_counter()
            batch = {**batch, "taps": read(batch)}
            reading += time.perf_counter() - t
        losses.append(train_step(model, batch, opt, sched, 1.0))
    return time.perf_counter() - t0, losses, reading


def turns(spec, tok, batches: list[dict], read, rounds: int) -> dict:
    """An uncached LST epoch, a cached one (reading its taps included) and the backbone forward over the same
    batches, taking turns ``rounds`` times, so that the machine's load falls on all three alike; each ratio is the
    median of its rounds'. One model trains uncached and one from the cache throughout (a step's time does not
    depend on the weights)."""
    uncached, cached = make("lst", spec, tok), make("lst", spec, tok)
    out = []
    for _ in range(rounds):
        u, _, _ = epoch(uncached, batches, 3e-3)
        c, _, r = epoch(cached, batches, 3e-3, read)
        t0 = time.perf_counter()
        for b in batches:
            collect_taps(uncached, **{k: v for k, v in b.items() if k != "labels"})
        f = time.perf_counter() - t0
        out.append({"uncached_s": u, "cached_s": c, "cache_read_s": r, "backbone_forward_s": f})
    fastest = {k: min(t[k] for t in out) for k in ("uncached_s", "cached_s", "backbone_forward_s")}
    return {
        "rounds": out,
        "cached_over_uncached_lst": statistics.median(t["cached_s"] / t["uncached_s"] for t in out),
        "uncached_lst_over_backbone_forward": statistics.median(
            t["uncached_s"] / t["backbone_forward_s"] for t in out
        ),
        "fastest": fastest,
        "fastest_cached_over_uncached_lst": fastest["cached_s"] / fastest["uncached_s"],
        "fastest_uncached_lst_over_backbone_forward": fastest["uncached_s"] / fastest["backbone_forward_s"],
    }


def multi_side(spec, tok, batches: list[dict]) -> dict:
    """4 side networks (r = 8, 8, 16, 16; other seeds; untrained: speed does not depend on training) on one
    backbone pass (``MultiSideModel.forward_all``) vs 4 separate LadderModels, each with its own backbone pass."""
    inputs = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    rows = sum(b["input_ids"].shape[0] for b in inputs)
    multi = MultiSideModel(load_task_backbone("minilm", spec, "sequence_classification", tok))
    separate = []
    for k, r in enumerate((8, 8, 16, 16)):
        torch.manual_seed(k)
        side = multi.add_side(f"task{k}", LadderConfig(reduction_factor=r, **SIDE_OPTIONS))
        separate.append(make("lst", spec, tok, r, k).eval())
        separate[-1].side.load_state_dict(side.side.state_dict())
    with torch.inference_mode():
        t0 = time.perf_counter()
        together = [multi.forward_all(**b) for b in inputs]
        one_pass = time.perf_counter() - t0
        t0 = time.perf_counter()
        alone = [[m(**b).logits for m in separate] for b in inputs]
        four = time.perf_counter() - t0
    same = all(
        torch.equal(together[i][f"task{k}"].logits, alone[i][k]) for i in range(len(inputs)) for k in range(4)
    )
    return {
        "rows": rows,
        "one_pass_rows_per_s": rows / one_pass,
        "separate_rows_per_s": rows / four,
        "speedup": four / one_pass,
        "outputs_equal": same,
    }


def markdown(o: dict) -> str:
    r, sw, ms, tn = o["ratios"], o["sweep"], o["multi_side"], o["turns"]
    pairs = ", ".join(f"{run['cached_s'] / run['uncached_s']:.3f}" for run in sw["runs"] if run["r"] == 8)
    rounds = "\n".join(
        f"| {k + 1} | {t['uncached_s']:.2f} | {t['cached_s']:.3f} ({t['cache_read_s']:.3f}) | "
        f"{t['backbone_forward_s']:.2f} | {t['cached_s'] / t['uncached_s']:.3f} | "
        f"{t['uncached_s'] / t['backbone_forward_s']:.2f} |"
        for k, t in enumerate(tn["rounds"])
    )
    return f"""# Tap cache on MiniLM-L6, MRPC ({o["examples"]} training pairs, batch {o["batch_size"]}, {o["steps"]} steps an epoch)

`{o.get("environment", "")}python benchmarks/tap_cache_minilm.py --examples {o["examples"]}{o["flags"]}`;
one process, side by side, 2 threads on a shared 2-core machine (absolute seconds are noisy; the ratios are from
the same run). The epoch is {o["examples"]} examples, not all 3,668, to fit a few minutes.

| one epoch | seconds | / uncached LST | / full |
|---|---|---|---|
| full fine-tuning | {o["full_s"]:.1f} | | 1.00 |
| LST, uncached | {o["lst_uncached_s"]:.1f} | 1.00 | {o["lst_uncached_s"] / o["full_s"]:.2f} |
| LST from the cache (reading taps {o["cache_read_s"]:.2f} s + steps {o["lst_cached_train_s"]:.2f} s) \
| {o["lst_cached_s"]:.1f} | {r["cached_over_uncached_lst"]:.2f} | {r["cached_over_full"]:.2f} |

Side by side, {len(tn["rounds"])} rounds in which an uncached LST epoch, a cached one and the backbone forward over
the same batches take turns (the single epochs of the table above are timed minutes apart):

| | cached / uncached LST epoch | uncached LST epoch / backbone forward |
|---|---|---|
| median of the rounds | **{tn["cached_over_uncached_lst"]:.3f}** | **{tn["uncached_lst_over_backbone_forward"]:.2f}** |
| the fastest rounds (the least disturbed) | **{tn["fastest_cached_over_uncached_lst"]:.3f}** \
| **{tn["fastest_uncached_lst_over_backbone_forward"]:.2f}** |

Every round:

| round | uncached LST, s | cached LST (reading), s | backbone forward, s | cached / uncached | uncached / backbone |
|---|---|---|---|---|---|
{rounds}

Cache build (float32, every training example once): {o["cache_build_s"]:.1f} s, {o["cache_bytes"] / 1024**2:.1f} MiB on
disk. Largest loss difference cached vs uncached over the epoch: {o["max_loss_diff"]:.2e}.

Where the limit lies: the backbone forward alone (`collect_taps`, no side network) takes \
{o["backbone_forward_s"]:.1f} s of the uncached LST epoch's {o["lst_uncached_s"]:.1f} s \
({100 * r["backbone_forward_share_of_uncached_lst"]:.0f}%): an uncached LST step costs \
{1 / r["backbone_forward_share_of_uncached_lst"]:.2f}x the backbone forward; from the cache, an epoch is the side network's forward and backward plus reading taps.

Sweep, 3 seeds x r in (8, 16), one epoch each: uncached {sw["uncached_s"]:.1f} s; from one cache {sw["cached_s"]:.1f} s
(+ {o["cache_build_s"]:.1f} s build = {sw["cached_plus_build_s"]:.1f} s, {r["sweep_cached_plus_build_over_uncached"]:.2f} of
uncached). Each sweep run times its cached epoch (reading taps included) right after its uncached one, so these
pairs share the machine's load: at r = 8 a cached epoch took {pairs} of the uncached one (median
{r["sweep_pair_cached_over_uncached_r8"]:.2f}).

4 side networks from one backbone pass vs 4 separate LST models (inference, {ms["rows"]} rows):
{ms["one_pass_rows_per_s"]:.1f} vs {ms["separate_rows_per_s"]:.1f} rows/s, {ms["speedup"]:.2f}x; outputs identical:
{ms["outputs_equal"]}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("LADDERTUNE_DATA_DIR", "/work/shared/data/glue"))
    parser.add_argument("--examples", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--turns", type=int, default=7, help="rounds of the side-by-side goal figures")
    parser.add_argument("--side-dropout", type=float, default=None)
    parser.add_argument("--side-attention-dropout", type=float, default=None)
    parser.add_argument("--side-attention-heads", type=int, default=None)
    args = parser.parse_args()
    name, flags = "tap_cache_minilm", ""
    if args.side_dropout is not None:
        SIDE_OPTIONS["side_dropout"] = args.side_dropout
        name += f"_dropout{args.side_dropout:g}"
        flags = f" --side-dropout {args.side_dropout:g}"
    if args.side_attention_dropout is not None:
        SIDE_OPTIONS["side_attention_dropout"] = args.side_attention_dropout
        name += f"_attn_dropout{args.side_attention_dropout:g}"
        flags += f" --side-attention-dropout {args.side_attention_dropout:g}"
    if args.side_attention_heads is not None:
        SIDE_OPTIONS["side_attention_heads"] = args.side_attention_heads
        name += f"_heads{args.side_attention_heads}"
        flags += f" --side-attention-heads {args.side_attention_heads}"
    environment = ""
    if not cpu_dropout.ENABLED:  # LADDERTUNE_CPU_DROPOUT=torch: torch's own CPU dropout in the side
        name += "_torch_dropout"
        environment = f"{cpu_dropout.ENV}=torch "
    torch.set_num_threads(2)
    splits = load_splits("mrpc", data_dir=args.data_dir, max_train_samples=args.examples, seed=42)
    spec, examples, tok = splits.spec, splits.train, load_tokenizer("minilm")
    collate = make_collator(tok, fmt="classification", spec=spec, max_length=128)
    order = epoch_batches(len(examples), args.batch_size, 0, 0)
    batches = [collate([examples[i] for i in b]) for b in order]
    cache_dir = Path(tempfile.mkdtemp(prefix="tapcache-"))
    out: dict = {
        "examples": len(examples),
        "batch_size": args.batch_size,
        "steps": len(batches),
        "task": "mrpc",
        "side_options": dict(SIDE_OPTIONS),
        "flags": flags,
        "environment": environment,
    }
    try:
        # warm-up (first-call costs of the kernels and allocator), so that no timed section pays for them
        epoch(make("lst", spec, tok), batches[:2], 3e-3)
        # 1. uncached LST
        lst = make("lst", spec, tok)
        out["lst_uncached_s"], uncached_losses, _ = epoch(lst, batches, 3e-3)
        # 2. build the cache (a fresh model with the same seed: the cache is of the backbone only)
        lst = make("lst", spec, tok)
        t0 = time.perf_counter()
        cache = open_tap_cache(cache_dir, lst, tok, examples, collate, max_length=128, fmt="classification")
        out["cache_build_s"], out["cache_bytes"] = time.perf_counter() - t0, cache.bytes
        layers = {"body": lst.side.stacks["body"].kept}

        def read(batch: dict) -> dict:
            return cache.taps(batch, layers)

        # 3. cached LST (reading taps is part of the timed epoch)
        out["lst_cached_s"], cached_losses, out["cache_read_s"] = epoch(lst, batches, 3e-3, read)
        out["lst_cached_train_s"] = out["lst_cached_s"] - out["cache_read_s"]
        out["max_loss_diff"] = max(abs(a - b) for a, b in zip(uncached_losses, cached_losses, strict=True))
        # 4. full fine-tuning
        full = make("full", spec, tok)
        out["full_s"], _, _ = epoch(full, batches, 3e-4)
        del full
        # 5. the backbone forward alone
        t0 = time.perf_counter()
        for b in batches:
            collect_taps(lst, **{k: v for k, v in b.items() if k != "labels"})
        out["backbone_forward_s"] = time.perf_counter() - t0
        # 6. the sweep
        sweep = {"uncached_s": 0.0, "cached_s": 0.0, "runs": []}
        for r in (8, 16):
            for seed in (0, 1, 2):
                m = make("lst", spec, tok, r, seed)
                su, lu, _ = epoch(m, batches, 3e-3)
                m = make("lst", spec, tok, r, seed)
                sc, lc, _ = epoch(m, batches, 3e-3, read)
                sweep["uncached_s"] += su
                sweep["cached_s"] += sc
                sweep["runs"].append(
                    {
                        "r": r,
                        "seed": seed,
                        "uncached_s": su,
                        "cached_s": sc,
                        "final_loss_uncached": lu[-1],
                        "final_loss_cached": lc[-1],
                    }
                )
        sweep["cached_plus_build_s"] = sweep["cached_s"] + out["cache_build_s"]
        out["sweep"] = sweep
        out["multi_side"] = multi_side(spec, tok, batches)
        # 8. the goal ratios, side by side
        out["turns"] = turns(spec, tok, batches, read, args.turns)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    out["ratios"] = {
        "cached_over_uncached_lst": out["lst_cached_s"] / out["lst_uncached_s"],
        "cached_over_full": out["lst_cached_s"] / out["full_s"],
        "backbone_forward_share_of_uncached_lst": out["backbone_forward_s"] / out["lst_uncached_s"],
        "sweep_cached_plus_build_over_uncached": sweep["cached_plus_build_s"] / sweep["uncached_s"],
        # the side-by-side figure: each r = 8 sweep run's cached epoch against its own uncached one
        "sweep_pair_cached_over_uncached_r8": statistics.median(
            run["cached_s"] / run["uncached_s"] for run in sweep["runs"] if run["r"] == 8
        ),
        "multi_side_speedup": out["multi_side"]["speedup"],
        "turns_cached_over_uncached_lst": out["turns"]["cached_over_uncached_lst"],
        "turns_uncached_lst_over_backbone_forward": out["turns"]["uncached_lst_over_backbone_forward"],
        "turns_fastest_cached_over_uncached_lst": out["turns"]["fastest_cached_over_uncached_lst"],
        "turns_fastest_uncached_lst_over_backbone_forward": out["turns"][
            "fastest_uncached_lst_over_backbone_forward"
        ],
    }
    out["versions"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(out))
    print(json.dumps({k: v for k, v in out.items() if k not in ("sweep", "turns")}, indent=2))
    print(json.dumps({k: v for k, v in sweep.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
