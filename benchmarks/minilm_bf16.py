"""The README's MiniLM SST-2 run in float32 and with a bf16 backbone + bf16 autocast, side by side (CPU).

Same data, seed and schedule as the README run (``laddertune train --task sst2 --max-train-samples 4800 --epochs 1
--data-dir /work/shared/data/glue``); only the precision settings differ. Reports the step time (mean of the
unmeasured steps), the peak training memory (the CPU meter over 3 steps) and the dev accuracy. Budget: about 4
minutes for both runs on this machine's AVX512-bf16 CPU (one thread); an earlier run on a machine loaded by the test
suite did not finish its bf16 half in 900 s (fp32 alone ran 2.41 s/step there), so keep the generous timeout, under
the machine's benchmark lock (``benchmarks/minilm_bf16_profile.py`` profiles a few steps of each setting)::

    python benchmarks/minilm_bf16.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from laddertune.training import train
from laddertune.training.config import TrainConfig

RESULTS = Path(__file__).parent / "results"
DATA = "/work/shared/data/glue"
RUNS = {
    "fp32": dict(precision="fp32", backbone_dtype="float32"),
    "bf16 backbone + bf16 autocast": dict(precision="bf16", backbone_dtype="bfloat16"),
}


def main() -> None:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in RUNS.items():
            config = TrainConfig.from_flat(
                task="sst2",
                max_train_samples=4800,
                epochs=1,
                data_dir=DATA,
                device="cpu",
                output_dir=str(Path(tmp) / name.replace(" ", "_")),
                **kw,
            )
            r = train(config)
            rows[name] = {
                "settings": kw,
                "seconds_per_step": r["timing"]["seconds_per_step"],
                "train_seconds": r["timing"]["train_seconds"],
                "peak_train_gib": r["memory"]["peak_train_gib"],
                "measurement": r["memory"]["measurement"],
                "dev_accuracy": r["metrics"]["best_validation"]["score"],
            }
            print(name, json.dumps(rows[name]), flush=True)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "runs": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "minilm_bf16.json").write_text(json.dumps(out, indent=2) + "\n")
    write_md(out)


def write_md(out: dict) -> None:
    """The .md beside the JSON (``--md-only`` rewrites it from the committed JSON)."""
    rows = out["runs"]
    lines = [
        "# MiniLM SST-2 (4,800 examples, 1 epoch, CPU): fp32 vs bf16 backbone + bf16 autocast",
        "",
        "Command: `python benchmarks/minilm_bf16.py` "
        f"(torch {out['torch']}, {out['threads']} thread(s), two shared CPU cores; run one after the other).",
        "",
        "| run | s/step | train s | peak train GiB | dev accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['seconds_per_step']:.3f} | {row['train_seconds']:.0f} | "
            f"{row['peak_train_gib']:.3f} | {row['dev_accuracy']:.2f} |"
        )
    base, other = rows["fp32"], rows["bf16 backbone + bf16 autocast"]
    lines += [
        "",
        f"bf16 against fp32: step time {other['seconds_per_step'] / base['seconds_per_step']:.2f}x, "
        f"peak {other['peak_train_gib'] / base['peak_train_gib']:.2f}x, dev accuracy "
        f"{other['dev_accuracy'] - base['dev_accuracy']:+.2f} points (goal: within 0.5).",
    ]
    (RESULTS / "minilm_bf16.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if "--md-only" in sys.argv:
        write_md(json.loads((RESULTS / "minilm_bf16.json").read_text()))
    else:
        main()
