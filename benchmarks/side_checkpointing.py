"""Activation checkpointing of the side network (``--side-checkpointing``): peak memory and step time on CPU.

    python benchmarks/side_checkpointing.py [--batch-size 8] [--length 512]

MiniLM-L6 (BERT, 384 wide) LST r=8, all 6 side layers, SDPA side attention, a sequence-classification step on
random token ids of exactly ``--length`` tokens (memory and time do not depend on the text). For each setting:
one warm-up step (creates the AdamW state), the peak over 2 steps with the CPU meter (``PeakMemoryMeter`` with the
model and optimizer as roots: the allocator's counter through torch.profiler), the mean time of 3 unmeasured
steps, and the bytes autograd saves for the backward in one forward (``saved_tensors_hooks``). The two settings
run in one process, one after the other; times are comparable as a ratio only. Writes
``results/side_checkpointing.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone
from laddertune.memory import GIB, PeakMemoryMeter

RESULTS = Path(__file__).parent / "results"


def step(model, optimizer, batch) -> None:
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def saved_bytes(model, batch) -> int:
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(sizes)


def measure(checkpointing: bool, batch: dict) -> dict:
    torch.manual_seed(0)
    backbone = load_backbone("minilm", "sequence_classification", num_labels=2)
    model = get_ladder_model(
        backbone, LadderConfig(reduction_factor=8, side_checkpointing=checkpointing)
    ).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    step(model, optimizer, batch)  # warm-up: the optimizer state exists from here on
    meter = PeakMemoryMeter(model, optimizer)
    with meter.phase("train"):
        for _ in range(2):
            step(model, optimizer, batch)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step(model, optimizer, batch)
        times.append(time.perf_counter() - start)
    return {
        "side_checkpointing": checkpointing,
        "peak_train_bytes": meter.report().peak("train"),
        "peak_train_gib": meter.report().peak("train") / GIB,
        "seconds_per_step": sum(times) / len(times),
        "step_seconds": times,
        "saved_for_backward_bytes": saved_bytes(model, batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 30000, (args.batch_size, args.length), generator=g),
        "attention_mask": torch.ones(args.batch_size, args.length, dtype=torch.long),
        "labels": torch.randint(0, 2, (args.batch_size,), generator=g),
    }
    rows = [measure(flag, batch) for flag in (False, True)]
    for r in rows:
        print(json.dumps(r), flush=True)
    off, on = rows
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "backbone": "minilm",
        "batch_size": args.batch_size,
        "length": args.length,
        "runs": rows,
        "peak_ratio": on["peak_train_bytes"] / off["peak_train_bytes"],
        "saved_ratio": on["saved_for_backward_bytes"] / off["saved_for_backward_bytes"],
        "step_time_ratio": on["seconds_per_step"] / off["seconds_per_step"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "side_checkpointing.json").write_text(json.dumps(out, indent=2) + "\n")
    mib = 2**20
    lines = [
        f"# Side activation checkpointing, MiniLM LST r=8, batch {args.batch_size} x {args.length} tokens, CPU",
        "",
        "Command: `python benchmarks/side_checkpointing.py "
        f"--batch-size {args.batch_size} --length {args.length}` (torch {out['torch']}, {out['threads']} thread(s)).",
        "",
        "| side checkpointing | peak train MiB | saved for backward MiB | s/step |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {'on' if r['side_checkpointing'] else 'off'} | {r['peak_train_bytes'] / mib:.1f} | "
            f"{r['saved_for_backward_bytes'] / mib:.1f} | {r['seconds_per_step']:.2f} |"
        )
    lines += [
        "",
        f"On/off: peak {out['peak_ratio']:.2f}x, saved-for-backward {out['saved_ratio']:.2f}x, "
        f"step time {out['step_time_ratio']:.2f}x.",
    ]
    (RESULTS / "side_checkpointing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
