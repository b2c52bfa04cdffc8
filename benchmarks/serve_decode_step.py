"""One decoding step of the serving engine, in process: a shared backbone pass over the rows of four side networks
against four passes over each side network's rows, and what a prefill costs beside a step.

    python benchmarks/serve_prepare.py          # the checkpoints (once)
    python benchmarks/serve_decode_step.py [--rows 4 8 16 32] [--steps 8] [--threads 2]

The serving benchmark (``serve_throughput.py``) measures whole servers over HTTP, where prefills, the load
generator and process scheduling share the cores with the decoding. This one times :class:`MixedBatch` alone, in one
process with ``--threads`` threads, on the four SmolLM2 LST checkpoints of ``serve_prepare.py``:

* ``mixed``: one batch of N rows, the four side networks' rows interleaved: one backbone pass per step, then each
  side network on its N/4 rows, then the LM head once;
* ``separate``: four batches of N/4 rows, one side network each, stepped one after another: what four single-task
  servers compute for the same rows (on the same cores, without their processes running side by side);
* ``prefill``: adding one row (the chat-templated question, prompt tokens as counted) to a batch, against one step.

Every row holds the same prompt and is fed the same token at every step, so every configuration does the same work
per row. Writes ``benchmarks/results/serve_decode_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from laddertune.serve.batching import MixedBatch
from laddertune.serve.registry import ServedModels

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "runs" / "serve_bench"
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("capital", "plural", "opposite", "arithmetic")
QUESTION = "What is the capital of France?"


class Row:
    """What MixedBatch needs of a row: its side network and its prompt."""

    def __init__(self, side, prompt: list[int]) -> None:
        self.side, self.prompt = side, prompt


def seconds_per_step(batches: list[MixedBatch], steps: int) -> float:
    """Mean seconds of one step of every batch in ``batches`` (one after another), after one warm-up step."""
    for b in batches:
        b.step([5] * len(b))
    start = time.perf_counter()
    for _ in range(steps):
        for b in batches:
            b.step([5] * len(b))
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", type=int, default=[4, 8, 16, 32])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    served = ServedModels.open({t: CHECKPOINTS / f"lst-{t}" for t in TASKS})
    sides = [served.get(t) for t in TASKS]
    prompt = served.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    rows = []
    for n in args.rows:
        if n % len(sides):
            raise SystemExit(f"--rows must be multiples of {len(sides)}, got {n}")
        mixed = MixedBatch()
        mixed.add([Row(sides[i % len(sides)], list(prompt)) for i in range(n)])
        separate = []
        for side in sides:
            b = MixedBatch()
            b.add([Row(side, list(prompt)) for _ in range(n // len(sides))])
            separate.append(b)
        row = {
            "rows": n,
            "mixed_s": seconds_per_step([mixed], args.steps),
            "separate_s": seconds_per_step(separate, args.steps),
        }
        row["separate_over_mixed"] = row["separate_s"] / row["mixed_s"]
        start = time.perf_counter()
        for _ in range(3):
            mixed.add([Row(sides[0], list(prompt))])
        row["prefill_one_row_s"] = (time.perf_counter() - start) / 3
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "threads": args.threads,
        "prompt_tokens": len(prompt),
        "side_layers": {s.name: len(s.model.side.stacks["body"].kept) for s in sides},
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_decode_step.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# One decoding step of the serving engine (SmolLM2, four LST side networks, in process)",
        "",
        f"`python benchmarks/serve_decode_step.py`; {args.threads} threads on a shared 2-core CPU, "
        f"prompt of {len(prompt)} tokens (the chat template's system prompt included), mean of {args.steps} steps.",
        "",
        "| rows | one shared pass (s/step) | four passes of rows/4 (s/step) | shared speed-up | prefill of 1 row (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['rows']} | {r['mixed_s']:.3f} | {r['separate_s']:.3f} | {r['separate_over_mixed']:.2f}x | "
        f"{r['prefill_one_row_s']:.3f} |"
        for r in rows
    ]
    (RESULTS / "serve_decode_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
