"""Packing: training tokens per second with and without packing, on a dataset of short rows of mixed lengths.

    python benchmarks/packing_throughput.py [--backbone smollm2] [--method lst] [--steps 6] [--rows 512]

Rows: prompt/completion pairs of seeded random words (their lengths: ``rows()``), rendered as SmolLM2 chat rows
(its template adds a system turn of about 30 tokens to every row) or, with ``--prompt-format plain``, as prompt,
newline, completion; the loss on the answers. Unpacked: batches of 16 rows, each padded to its longest row
(laddertune's dynamic padding). Packed: the same rows packed into sequences of ``--max-length`` tokens (best fit,
per-row positions, no attention across rows), batched so that a packed batch holds about as many real tokens as an
unpacked one. Both run the same model (``get_ladder_model`` for LST, PEFT LoRA for ``--method lora``), AdamW,
forward + backward + step; the two kinds of steps alternate (unpacked, packed, unpacked...) after one warm-up step
each, so that the load of a shared machine falls on both alike. Reported: real (non-padding) training tokens per
second of each, their ratio, the share of padding, and the loss of the same rows both ways (equal up to float
rounding: packing leaks nothing).

Writes ``benchmarks/results/packing_throughput.json`` and ``.md`` (``--lengths longtail``:
``packing_throughput_longtail.*``; ``--prompt-format plain`` adds ``_plain``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
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
from laddertune.data import GenerativeCollator, encode_causal, pack_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORDS = (
    "the a of and to in is it that was for on are as with his they at be this from have or by one had".split()
)


def rows(n: int, seed: int, lengths: str = "uniform") -> list[dict]:
    """``uniform``: prompts of 4-60 words, answers of 2-20, evenly. ``longtail``: log-normal lengths (median 12-word
    prompts and 6-word answers, a few up to 150 and 60 words), the shape of real instruction data, where most rows
    are short and a few are long, so that a batch padded to its longest row is mostly padding."""
    g = random.Random(seed)
    text = lambda k: " ".join(g.choice(WORDS) for _ in range(k))  # noqa: E731
    if lengths == "uniform":
        return [{"prompt": text(g.randint(4, 60)), "completion": text(g.randint(2, 20))} for _ in range(n)]
    size = lambda median, cap: max(1, min(cap, round(g.lognormvariate(math.log(median), 0.9))))  # noqa: E731
    return [{"prompt": text(size(12, 150)), "completion": text(size(6, 60))} for _ in range(n)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="smollm2")
    p.add_argument("--method", default="lst", choices=["lst", "lora"])
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=6, help="timed steps of each kind")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--lengths", default="uniform", choices=["uniform", "longtail"], help="row lengths (see rows())"
    )
    p.add_argument(
        "--prompt-format",
        default="auto",
        choices=["auto", "plain"],
        help="auto: the chat template (SmolLM2's)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.backbone)
    encoded, _ = encode_causal(
        rows(args.rows, 0, args.lengths),
        tokenizer,
        max_length=args.max_length,
        prompt_format=args.prompt_format,
    )
    collate = GenerativeCollator(tokenizer.pad_token_id)

    def batches(items: list[dict], size: int) -> list[tuple[dict, int]]:  # (batch, its real tokens)
        return [
            (collate(items[i : i + size]), sum(len(r["input_ids"]) for r in items[i : i + size]))
            for i in range(0, len(items), size)
        ]

    plain = batches(encoded, args.batch_size)
    packed_rows = pack_rows(encoded, args.max_length)
    real = sum(len(r["input_ids"]) for r in encoded)
    per_batch = max(1, round(len(packed_rows) * args.batch_size / len(encoded)))  # about the same real tokens
    packed = batches(packed_rows, per_batch)
    backbone = load_backbone(args.backbone, "causal_lm")
    model = (
        get_ladder_model(backbone, LadderConfig())
        if args.method == "lst"
        else prepare_baseline(backbone, "lora")
    )
    model.train()
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    def step(batch: dict) -> float:
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(plain[0][0])
    step(packed[0][0])  # warm-up
    times = {"unpacked": [], "packed": []}
    counted = {"unpacked": 0, "packed": 0}
    for i in range(args.steps):
        for kind, kind_batches in (("unpacked", plain), ("packed", packed)):
            batch, real_tokens = kind_batches[(i + 1) % len(kind_batches)]
            times[kind].append(step(batch))
            counted[kind] += real_tokens
    rate = {k: counted[k] / sum(times[k]) for k in times}
    padded = sum(b["input_ids"].numel() for b, _ in plain)
    model.eval()
    with torch.no_grad():
        subset = encoded[:32]
        loss_plain = float(model(**collate(subset)).loss)
        loss_packed = float(model(**collate(pack_rows(subset, args.max_length))).loss)
    out = {
        "backbone": args.backbone,
        "method": args.method,
        "rows": len(encoded),
        "real_tokens": real,
        "unpacked_padding_share": round(1 - real / padded, 4),
        "packed_sequences": len(packed_rows),
        "packed_fill": round(real / (len(packed_rows) * args.max_length), 4),
        "tokens_per_second": {k: round(v, 1) for k, v in rate.items()},
        "speedup": round(rate["packed"] / rate["unpacked"], 3),
        "seconds_per_step": {k: round(statistics.mean(v), 3) for k, v in times.items()},
        "loss_same_rows": {"unpacked": loss_plain, "packed": loss_packed},
        "settings": vars(args),
        "torch_threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "packing_throughput" + "".join(
        f"_{v}" for v, default in ((args.lengths, "uniform"), (args.prompt_format, "auto")) if v != default
    )
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [
        f"# Packing throughput ({args.backbone}, {args.method})",
        "",
        f"Command: `python benchmarks/packing_throughput.py --backbone {args.backbone} --method {args.method} "
        f"--rows {args.rows} --batch-size {args.batch_size} --max-length {args.max_length} --steps {args.steps} "
        f"--lengths {args.lengths} --prompt-format {args.prompt_format}`",
        "",
        f"{len(encoded)} rows, {real} real tokens; unpacked batches of {args.batch_size} are "
        f"{100 * out['unpacked_padding_share']:.1f}% padding; packed into {len(packed_rows)} sequences of "
        f"{args.max_length} ({100 * out['packed_fill']:.1f}% full), {per_batch} per batch.",
        "",
        "| | real tokens/s | s/step |",
        "|---|---|---|",
        *(f"| {k} | {rate[k]:.1f} | {out['seconds_per_step'][k]:.3f} |" for k in rate),
        "",
        f"Packed / unpacked tokens per second: **{out['speedup']:.2f}x**. The same 32 rows' loss: unpacked "
        f"{loss_plain:.6f}, packed {loss_packed:.6f}.",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
