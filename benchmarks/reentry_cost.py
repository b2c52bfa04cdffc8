"""What re-entry costs per training step: peak memory and seconds per step, with and without side checkpointing,
against LST without re-entry and LoRA, side by side in one process.

    python benchmarks/reentry_cost.py [--k 12 16] [--steps 6] [--batch-size 16]

The batches are those of ``benchmarks/instruction_tuning.py``: the shipped instruction sample's training rows in
file order, rendered with SmolLM2's chat template (answers-only loss), 16 to a batch, at most 96 tokens. Every
variant is built from its own copy of the backbone, with laddertune's defaults except the flag in its name (LST:
``--loss-chunk-size 128``, as the instruction benchmark runs it; LoRA: r=32 on q and v). Peak memory: the meter of
``laddertune train`` (CPU: the allocator's counter through the profiler) over two steps after a warm-up step.
Time: after the warm-up, the variants take turns step by step (one step each, ``--steps`` rounds, a different batch
each round), so that the load of a shared machine falls on all alike; reported as the mean seconds per step and as
a ratio to LST without re-entry.

Writes ``benchmarks/results/reentry_cost.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from laddertune import LadderConfig, get_ladder_model  # noqa: E402
from laddertune.baselines import prepare_baseline  # noqa: E402
from laddertune.core.backbones import load_backbone, load_tokenizer  # noqa: E402
from laddertune.data import GenerativeCollator, encode_causal  # noqa: E402
from laddertune.memory.meter import PeakMemoryMeter  # noqa: E402

DATA = ROOT / "laddertune" / "data" / "sample" / "instructions" / "train.jsonl"
RESULTS = ROOT / "benchmarks" / "results"


def variants(ks: list[int]) -> dict[str, dict | None]:
    """Name -> LadderConfig fields (None: LoRA)."""
    out: dict[str, dict | None] = {"lst": {}}
    for k in ks:
        out[f"lst --reentry-layers {k}"] = {"reentry_layers": k}
        out[f"lst --reentry-layers {k} --no-side-checkpointing"] = {
            "reentry_layers": k,
            "side_checkpointing": False,
        }
    out["lora"] = None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="+", default=[12, 16], help="re-entry layers")
    p.add_argument("--steps", type=int, default=6, help="timed rounds (one step of each variant per round)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("smollm2")
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    encoded, _ = encode_causal(rows, tokenizer, max_length=args.max_length)
    collate = GenerativeCollator(tokenizer.pad_token_id)
    batches = [collate(encoded[i : i + args.batch_size]) for i in range(0, len(encoded), args.batch_size)]
    if len(batches) < args.steps + 3:
        raise SystemExit(f"{len(batches)} batches: too few for {args.steps} timed rounds")

    models, optimizers = {}, {}
    for name, fields in variants(args.k).items():
        torch.manual_seed(0)
        backbone = load_backbone("smollm2", "causal_lm")
        if fields is None:
            model = prepare_baseline(backbone, "lora")
        else:
            model = get_ladder_model(backbone, LadderConfig(loss_chunk_size=128, **fields))
        models[name] = model.train()
        optimizers[name] = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    def step(name: str, batch: dict) -> float:
        t0 = time.perf_counter()
        models[name](**batch).loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    peaks = {}
    for name in models:
        step(name, batches[0])  # warm-up: creates the optimizer state
        meter = PeakMemoryMeter(models[name], optimizers[name])
        with meter.phase("train"):
            step(name, batches[1])
            step(name, batches[2])
        peaks[name] = meter.report().peak("train")
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.steps):
        for name in models:
            times[name].append(step(name, batches[3 + i]))
    base = statistics.mean(times["lst"])
    out = {
        "variants": {
            name: {
                "peak_train_gib": round(peaks[name] / 2**30, 3),
                "seconds_per_step": round(statistics.mean(times[name]), 3),
                "time_vs_lst": round(statistics.mean(times[name]) / base, 2),
                "memory_vs_lora": round(peaks[name] / peaks["lora"], 2),
            }
            for name in models
        },
        "settings": vars(args),
        "torch_threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reentry_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    ks = " ".join(str(k) for k in args.k)
    md = [
        "# What re-entry costs per step (SmolLM2-135M, instruction batches)",
        "",
        f"Command: `python benchmarks/reentry_cost.py --k {ks} --steps {args.steps} --batch-size {args.batch_size} "
        f"--max-length {args.max_length} --threads {args.threads}`; batches of {args.batch_size} instruction rows, "
        f"CPU, the variants taking turns step by step.",
        "",
        "| variant | peak train GiB | / LoRA | s/step | / LST |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {v['peak_train_gib']:.3f} | {v['memory_vs_lora']:.2f} | {v['seconds_per_step']:.3f} | "
            f"{v['time_vs_lst']:.2f} |"
            for name, v in out["variants"].items()
        ),
    ]
    (RESULTS / "reentry_cost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
