"""LST on the offline pretrained backbones: training loss on a fixed batch of real RTE text, before and after.

    python benchmarks/real_backbones_loss.py [--data-dir ../shared/data/glue]

The same procedure as tests/test_real_backbones.py (which asserts the loss at least halves): MiniLM-L6 as a
classifier (16 examples, 15 AdamW steps, lr 3e-3) and SmolLM2-135M as a causal LM on "rte ... label: <answer>"
(8 examples, 12 steps), r=8, eval-mode loss. Writes benchmarks/results/real_backbones_loss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer
from laddertune.data import load_splits, make_collator

RESULTS = Path(__file__).parent / "results" / "real_backbones_loss.json"
RUNS = [  # alias, head, format, examples, max_length, steps
    ("minilm", "sequence_classification", "classification", 16, 128, 15),
    ("smollm2", "causal_lm", "causal", 8, 96, 12),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("LADDERTUNE_DATA_DIR", "../shared/data/glue"))
    args = parser.parse_args()
    rows = []
    for alias, head, fmt, n, max_length, steps in RUNS:
        torch.manual_seed(0)
        kwargs = {"num_labels": 2} if head == "sequence_classification" else {}
        backbone = load_backbone(alias, head, **kwargs)
        tokenizer = load_tokenizer(alias)
        splits = load_splits("rte", data_dir=args.data_dir, max_train_samples=n)
        batch = make_collator(tokenizer, fmt=fmt, spec=splits.spec, max_length=max_length)(splits.train)
        # the authors' side and head: every side layer, full-width taps, the backbone's heads, no final shortcut
        config = LadderConfig(
            reduction_factor=8, side_layer_stride=1, tap_projection="none", side_attention_heads=0,
            final_shortcut=False,
        )  # fmt: skip
        model = get_ladder_model(backbone, config)
        optimizer = torch.optim.AdamW(model.side.parameters(), lr=3e-3)
        start = time.perf_counter()
        with torch.no_grad():
            before = model.eval()(**batch).loss.item()
        model.train()
        for _ in range(steps):
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        with torch.no_grad():
            after = model.eval()(**batch).loss.item()
        trainable, total = model.trainable_parameters()
        row = {
            "backbone": alias,
            "head": head,
            "examples": n,
            "steps": steps,
            "loss_before": round(before, 4),
            "loss_after": round(after, 4),
            "trainable": trainable,
            "total": total,
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
