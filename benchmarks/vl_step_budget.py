"""Why vl_synthetic's first setting (15 epochs) stayed at the text-only prior: one task, several budgets and oracles.

    python benchmarks/vl_step_budget.py --tasks gqa --epochs 150

The same images, random frozen CLIP ViT, random frozen T5 and LST (r = 4, all layers, the optimiser of docs/concepts.md#fact-clip-t5)
as ``benchmarks/vl_synthetic.py``, restricted to ``--tasks``, evaluated greedily on the test images and on 200
training examples. ``--oracle`` replaces the ViT features by hand-made ones (a diagnostic, never a result):

* ``global``: every cell holds the one-hot (colour, side) of every object: no lookup needed;
* ``cell``: only the cell under an object holds its colour one-hot: the side must come from the box embedding;
* ``cell-side``: only that cell holds the (colour, side) one-hot: a content lookup, no box reading.

``--standardise`` z-scores the features per dimension. Prints one line per run; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from vl_synthetic import backbone, random_clip  # noqa: E402

from laddertune.core import LadderConfig  # noqa: E402
from laddertune.vision import VisionLadderModel, VisualConfig  # noqa: E402
from laddertune.vision.features import FeatureStore, extract_features  # noqa: E402
from laddertune.vision.synthetic import COLOURS, SIZE, build, text_only_prior, word_tokenizer  # noqa: E402
from laddertune.vision.training import VLCollator, VLTrainConfig, evaluate_vl, train_vl  # noqa: E402


def oracle(feats: torch.Tensor, scene, kind: str) -> torch.Tensor:
    out = torch.zeros_like(feats)
    side = round(feats.shape[0] ** 0.5)
    for colour, _, where, x, y in scene:
        k = list(COLOURS).index(colour) + (4 if where == "right" else 0)
        if kind == "global":
            out[:, k] = 3.0
            continue
        cx, cy = (min(int((v + 7) / SIZE * side), side - 1) for v in (x, y))
        out[cy * side + cx, k if kind == "cell-side" else k % 4] = 3.0
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", default="gqa")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--reduction-factor", type=int, default=4)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--runs", default="features,zeroed")
    p.add_argument("--oracle", choices=("global", "cell", "cell-side"), default=None)
    p.add_argument("--standardise", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    train, scenes = build(tmp / "images", a.images, seed=0)
    test, test_scenes = build(tmp / "test_images", 60, seed=1)
    scenes |= test_scenes
    tasks = a.tasks.split(",")
    train, test = [e for e in train if e.task in tasks], [e for e in test if e.task in tasks]
    random_clip(tmp / "clip")
    feats = {}
    for name in ("images", "test_images"):
        extract_features(tmp / name, tmp / f"{name}.h5", encoder=str(tmp / "clip"), pool=a.pool)
        with FeatureStore(tmp / f"{name}.h5") as store:
            feats |= {i: store[i] for i in store.ids()}
    if a.oracle:
        feats = {i: (oracle(f, scenes[i], a.oracle), b) for i, (f, b) in feats.items()}
    if a.standardise:
        every = torch.stack([f for f, _ in feats.values()])
        mu, sd = every.mean((0, 1)), every.std((0, 1)) + 1e-6
        feats = {i: ((f - mu) / sd, b) for i, (f, b) in feats.items()}
    dim = next(iter(feats.values()))[0].shape[-1]
    tok = word_tokenizer(train + test)
    print("text-only prior", text_only_prior(train, test), flush=True)
    for run in a.runs.split(","):
        start = time.perf_counter()
        model = VisionLadderModel(
            backbone(len(tok)),
            VisualConfig(feature_dim=dim, max_images=2),
            LadderConfig(reduction_factor=a.reduction_factor),
        )
        collator = VLCollator(tok, feats, zero_features=run == "zeroed")
        config = VLTrainConfig(epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.lr)
        losses = train_vl(model, train, collator, config)
        on_test = evaluate_vl(model, test, collator, tok, num_beams=1)
        on_train = evaluate_vl(model, train[:200], collator, tok, num_beams=1)
        print(
            run, f"steps {len(losses)} final loss {sum(losses[-10:]) / 10:.4f}",
            "test", {k: round(v["score"], 1) for k, v in on_test.items()},
            "train", {k: round(v["score"], 1) for k, v in on_train.items()},
            f"{time.perf_counter() - start:.0f} s", flush=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
