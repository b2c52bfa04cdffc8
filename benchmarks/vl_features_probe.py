"""Do the synthetic task's image features carry what its answers need? Variance and linear probes.

    python benchmarks/vl_features_probe.py

A diagnostic for ``benchmarks/vl_synthetic.py``: the same PIL shapes and the same random frozen CLIP ViT, with the
grid kept at several resolutions. For each variant it reports

* the variance of the features ACROSS images (same cell, different images) against WITHIN an image (different
  cells), and the mean cosine similarity of two images' whole feature maps;
* logistic-regression probes (scikit-learn, fitted on the train images, scored on the test images) for the count
  of shapes, the presence of each colour (mean over colours) and, for images holding it, the side (left/right) of
  each colour (mean over colours): the questions the vqa / nlvr / gqa examples ask.

Writes benchmarks/results/vl_features_probe.json and .md. About a minute of CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).parent))
from vl_synthetic import random_clip  # noqa: E402

from laddertune.vision.features import FeatureStore, extract_features  # noqa: E402
from laddertune.vision.synthetic import COLOURS, build  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def load(path: Path, ids: list[str]) -> np.ndarray:
    with FeatureStore(path) as store:
        return np.stack([store[i][0].numpy() for i in ids])  # (images, N, F)


def probe(x_train, y_train, x_test, y_test) -> float:
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(x_train), y_train)
    return float(clf.score(scaler.transform(x_test), y_test))


def labels(scenes: dict, ids: list[str]) -> dict:
    out = {"count": np.array([len(scenes[i]) for i in ids])}
    for c in COLOURS:
        out[f"has_{c}"] = np.array([any(o[0] == c for o in scenes[i]) for i in ids])
        out[f"side_{c}"] = np.array(
            [next((o[2] == "left" for o in scenes[i] if o[0] == c), None) for i in ids]
        )
    return out


def stats(train: np.ndarray, test: np.ndarray, ytr: dict, yte: dict) -> dict:
    feats = np.concatenate([train, test])  # (I, N, F)
    across = float(feats.var(axis=0).mean())  # same cell, different images
    within = float(feats.var(axis=1).mean())  # same image, different cells
    flat = feats.reshape(len(feats), -1)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    cos = unit @ unit.T
    off = float((cos.sum() - np.trace(cos)) / (len(cos) * (len(cos) - 1)))
    xtr, xte = train.reshape(len(train), -1), test.reshape(len(test), -1)
    result = {
        "grid_cells": int(train.shape[1]),
        "var_across_images": round(across, 4),
        "var_within_image": round(within, 4),
        "mean_cosine_between_images": round(off, 4),
        "probe_count": round(probe(xtr, ytr["count"], xte, yte["count"]), 3),
    }
    has = [probe(xtr, ytr[f"has_{c}"], xte, yte[f"has_{c}"]) for c in COLOURS]
    sides = []
    for c in COLOURS:
        mtr, mte = ytr[f"side_{c}"] != None, yte[f"side_{c}"] != None  # noqa: E711
        sides.append(
            probe(xtr[mtr], ytr[f"side_{c}"][mtr].astype(int), xte[mte], yte[f"side_{c}"][mte].astype(int))
        )
    result["probe_has_colour"] = round(float(np.mean(has)), 3)
    result["probe_side_of_colour"] = round(float(np.mean(sides)), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "vl_features_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = {"max-pooled 4x4 (vl_synthetic's first setting)": ("max", 4), "full 8x8 grid": ("max", None),
                "max-pooled 2x2": ("max", 2), "max-pooled 1x1 (global)": ("max", 1)}  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, scenes_tr = build(tmp / "train", args.train_images, seed=0)
        _, scenes_te = build(tmp / "test", args.test_images, seed=1)
        random_clip(tmp / "clip")
        ytr, yte = labels(scenes_tr, list(scenes_tr)), labels(scenes_te, list(scenes_te))
        for name, (_, pool) in variants.items():
            for split in ("train", "test"):
                extract_features(tmp / split, tmp / f"{split}.h5", encoder=str(tmp / "clip"), pool=pool)
            train, test = load(tmp / "train.h5", list(scenes_tr)), load(tmp / "test.h5", list(scenes_te))
            results[name] = stats(train, test, ytr, yte)
            print(name, results[name], flush=True)
    majority = {
        "count": float(np.mean(yte["count"] == np.bincount(ytr["count"]).argmax())),
        "has_colour": float(
            np.mean([max(yte[f"has_{c}"].mean(), 1 - yte[f"has_{c}"].mean()) for c in COLOURS])
        ),
    }
    out = {"train_images": args.train_images, "test_images": args.test_images, "majority": majority,
           "variants": results}  # fmt: skip
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    keys = ["grid_cells", "var_across_images", "var_within_image", "mean_cosine_between_images", "probe_count",
            "probe_has_colour", "probe_side_of_colour"]  # fmt: skip
    md = [
        "# Synthetic shapes: do the random frozen CLIP ViT's grid features carry colour, count and position?",
        "",
        f"`python benchmarks/vl_features_probe.py`: {args.train_images} train / {args.test_images} test "
        "images; logistic-regression probes (scikit-learn) on the flattened grid, test accuracy.",
        "",
        "| features | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
        *[f"| {n} | " + " | ".join(str(r[k]) for k in keys) + " |" for n, r in results.items()],
        "",
        f"Majority-class test accuracy: count {majority['count']:.3f}, colour presence {majority['has_colour']:.3f}, "
        "side 0.5 or so.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
