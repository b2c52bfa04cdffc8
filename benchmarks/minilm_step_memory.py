"""Peak memory and time of one training step on MiniLM-L6: LST vs full fine-tuning vs LoRA.

    python benchmarks/minilm_step_memory.py [--batch-size 32] [--length 128] [--data-dir ../shared/data/glue]

Real RTE sentences padded to exactly ``--length`` tokens. Each method: one warm-up step (creates the AdamW state),
then the peak of live CPU tensor bytes over 2 measured steps (``laddertune.memory.PeakMemoryMeter``: the CPU
allocator's counter through torch.profiler, with the model and optimizer as roots), then the mean time of 3 more
steps. Writes benchmarks/results/minilm_step_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from laddertune import LadderConfig, get_ladder_model
from laddertune.baselines import count_trainable, prepare_baseline
from laddertune.core.backbones import load_backbone, load_tokenizer
from laddertune.data import load_splits
from laddertune.memory import GIB, PeakMemoryMeter

RESULTS = Path(__file__).parent / "results" / "minilm_step_memory.json"


def build(method: str):
    torch.manual_seed(0)
    backbone = load_backbone("minilm", "sequence_classification", num_labels=2)
    if method == "lst":
        model = get_ladder_model(backbone, LadderConfig(reduction_factor=8))
        return model, model.trainable_parameters()
    model = prepare_baseline(backbone, method)
    return model, count_trainable(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--data-dir", default=os.environ.get("LADDERTUNE_DATA_DIR", "../shared/data/glue"))
    args = parser.parse_args()
    tokenizer = load_tokenizer("minilm")
    examples = load_splits("rte", data_dir=args.data_dir).train[: args.batch_size]
    batch = tokenizer(
        [e["text"] for e in examples],
        [e["text_pair"] for e in examples],
        padding="max_length",
        truncation=True,
        max_length=args.length,
        return_tensors="pt",
    )
    batch["labels"] = torch.tensor([e["label"] for e in examples])

    rows = []
    for method in ("full", "lora", "lst"):
        model, (trainable, total) = build(method)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)

        def step(model=model, optimizer=optimizer):  # bound now: the loop rebinds both
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # warm-up: AdamW state exists from here on
        meter = PeakMemoryMeter(model, optimizer)
        with meter.phase("train"):
            for _ in range(2):
                step()
        start = time.perf_counter()
        for _ in range(3):
            step()
        seconds = (time.perf_counter() - start) / 3
        peak = meter.report().peak("train")
        rows.append(
            {
                "method": method,
                "trainable": trainable,
                "total": total,
                "peak_bytes": peak,
                "peak_gib": round(peak / GIB, 3),
                "seconds_per_step": round(seconds, 3),
            }
        )
        print(
            f"{method:5s} trainable {trainable:>11,d} ({100 * trainable / total:5.2f}%)  "
            f"peak {peak / GIB:6.3f} GiB  {seconds:5.2f} s/step",
            flush=True,
        )
        del model, optimizer, params
    full = rows[0]["peak_bytes"]
    for row in rows:
        row["peak_vs_full"] = round(row["peak_bytes"] / full, 3)
    out = {
        "backbone": "minilm (all-MiniLM-L6-v2)",
        "batch_size": args.batch_size,
        "length": args.length,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cpu",
        "measurement": "PeakMemoryMeter (CPU allocator via torch.profiler), 2 steps after 1 warm-up step",
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
