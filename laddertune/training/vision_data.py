"""The data of a vision-and-language run (``--task vqa|gqa|nlvr2|caption|vl-multitask``): its examples, image
features, batcher and the per-task order of its batches.

Each task's annotations are read by :func:`laddertune.vision.tasks.load_examples` (VL-Adapter's annotation JSON,
Karpathy's ``dataset_coco.json`` — its train + restval images for training, val for validation — or plain JSONL);
a task without validation annotations holds out a seeded 10% of its examples. Captions train on every reference
caption of an image (VL-T5's recipe) and are scored against all of them. Every image of every example must be in
the feature file, with the same number of regions and feature size, which is checked before anything is written.

A batch holds one task (NLVR2's two images, captions' long targets), of that task's size; an epoch's batches are
every task's, shuffled together (VL-Adapter's multi-task loader), in an order drawn from the seed and the epoch
alone, so a resumed run continues the same order.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.backbones import load_tokenizer
from ..errors import ConfigError, DataError
from ..io import portable_path
from ..vision.features import FeatureStore
from ..vision.tasks import VLExample, caption_training_examples, load_examples
from ..vision.training import VLCollator
from ..vision.visual_embedding import VisualConfig
from .build import choose_format
from .vision_options import VL_EPOCHS

FORMAT, HEAD = "vision", "seq2seq_lm"
SPLIT_SEED = 42  # the text tasks' split seed: held-out validation and subsamples do not move with --seed
HELD_OUT = 0.1


@dataclass(frozen=True)
class VLRunSpec:
    """What a run knows of its task (as a text task's ``TaskSpec`` tells it)."""

    name: str
    """The run's task: vqa, gqa, nlvr2, caption or vl-multitask."""
    tasks: tuple[str, ...]
    """The tasks it trains (their spec names: vqa, gqa, nlvr, caption)."""
    epochs: int = VL_EPOCHS
    """``--epochs paper``: the paper's 20."""


@dataclass
class VLSplits:
    """A vision-and-language run's examples, as a text run's splits (no test split)."""

    spec: VLRunSpec
    train: list[VLExample]
    validation: list[VLExample]
    sources: dict
    """Where they come from: the feature file and each task's annotation files (None: held out)."""
    batch_sizes: dict[str, int]
    notes: list[str] = field(default_factory=list)
    test: None = None

    def summary(self, relative_to: str | Path | None = None) -> dict:
        """Sizes (per task too), batch sizes and sources, for ``results.json`` (paths relative to a run folder)."""

        def where(path):
            return (
                path
                if relative_to is None or path is None
                else portable_path(path, relative_to, must_exist=False)
            )

        train, validation = Counter(e.task for e in self.train), Counter(e.task for e in self.validation)
        return {
            "task": self.spec.name,
            "tasks": list(self.spec.tasks),
            "features": where(self.sources["features"]),
            "annotations": {t: where(f) for t, f in self.sources["annotations"].items()},
            "validation_annotations": {
                t: where(f) for t, f in self.sources["validation_annotations"].items()
            },
            "sizes": {"train": len(self.train), "validation": len(self.validation), "test": None},
            "task_sizes": {t: {"train": train[t], "validation": validation[t]} for t in self.spec.tasks},
            "batch_sizes": dict(self.batch_sizes),
            "notes": list(self.notes),
        }


@dataclass
class VisionData:
    """A vision-and-language run's data: its splits, the feature file, the visual input's shape and the batcher."""

    splits: VLSplits
    store: FeatureStore
    visual: VisualConfig
    tokenizer: object
    collate: VLCollator
    max_source_length: int

    def epoch_batches(self, seed: int, epoch: int) -> list[list[int]]:
        """One epoch's batches as indices of the training examples: one task each, of its batch size, shuffled
        within each task and then together, from ``(seed, epoch)`` alone."""
        state = int(np.random.SeedSequence([seed, epoch + 1]).generate_state(1)[0])
        g = torch.Generator().manual_seed(state)
        batches = []
        for task, indices in self._by_task().items():
            size = self.splits.batch_sizes[task]
            order = [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
            batches += [order[i : i + size] for i in range(0, len(order), size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def batch_count(self) -> int:
        """Batches per epoch: every task's examples over its batch size, rounded up."""
        return sum(math.ceil(len(ix) / self.splits.batch_sizes[t]) for t, ix in self._by_task().items())

    def _by_task(self) -> dict[str, list[int]]:
        by_task: dict[str, list[int]] = {t: [] for t in self.splits.spec.tasks}
        for i, e in enumerate(self.splits.train):
            by_task[e.task].append(i)
        return {t: ix for t, ix in by_task.items() if ix}

    def record(self) -> dict:
        """What ``task.json`` keeps for prediction: the tasks, the visual input's shape, the text length."""
        return {
            "tasks": list(self.splits.spec.tasks),
            "visual": self.visual.to_dict(),
            "max_source_length": self.max_source_length,
        }


def load_vision_data(config, *, training: bool = True) -> VisionData:
    """A vision-and-language run's data as ``config`` (a :class:`~laddertune.training.config.TrainConfig`) says.

    ``training=False`` (``evaluate``): the validation examples are what matter; a task with validation
    annotations does not read its training file, and only the validation images must be in the features.

    Raises:
        ConfigError: a backbone that is not an encoder-decoder.
        DataError: an unreadable file, an empty task, an image missing from the features, images of different
            shapes.
    """
    data, model = config.data, config.model
    _, head = choose_format(model.backbone, None, model.trust_remote_code)
    if head != HEAD:
        raise ConfigError(
            f"vision-and-language tasks generate their answers with an encoder-decoder backbone (a T5); "
            f"{model.backbone!r} is not one: pass --backbone t5-base (the paper's) or another T5"
        )
    store = FeatureStore(data.features)
    tasks = tuple(data.annotations)
    validation_files = data.validation_annotations or {}
    train, validation, notes = [], [], []
    for task in tasks:
        given = validation_files.get(task)
        if given is not None:
            held = _read(task, given, "val")
            rest = _read(task, data.annotations[task], "train") if training else []
        else:
            rest, held = _hold_out(task, _read(task, data.annotations[task], "train"))
            notes.append(f"{task}: validation is a seeded {HELD_OUT:.0%} of the training annotations")
        train += caption_training_examples(rest) if task == "caption" else rest
        validation += held
    if training and data.max_train_samples is not None:
        train = _subsample(train, data.max_train_samples)
    if data.max_eval_samples is not None:
        validation = _subsample(validation, data.max_eval_samples)
    regions, feature_dim = check_images(train + validation, store)
    batch_sizes = {t: (data.task_batch_sizes or {}).get(t, config.optimization.batch_size) for t in tasks}
    sources = {"features": data.features, "annotations": dict(data.annotations),
               "validation_annotations": {t: validation_files.get(t) for t in tasks}}  # fmt: skip
    splits = VLSplits(VLRunSpec(data.task, tasks), train, validation, sources, batch_sizes, notes)
    tokenizer = load_tokenizer(model.backbone, trust_remote_code=model.trust_remote_code)
    collate = VLCollator(tokenizer, store, max_source_length=data.max_length)
    return VisionData(
        splits, store, VisualConfig(feature_dim=feature_dim), tokenizer, collate, data.max_length
    )


def _read(task: str, path: str, split: str) -> list[VLExample]:
    """``task``'s examples of one annotation file (Karpathy's caption file: the ``split`` images)."""
    examples = load_examples(task, path, split=split)
    if not examples:
        raise DataError(
            f"{path} holds no {task} examples" + (f" of the {split} split" if task == "caption" else "")
        )
    return examples


def _hold_out(task: str, examples: list[VLExample]) -> tuple[list[VLExample], list[VLExample]]:
    """(training, validation): a seeded 10% (at least one) of ``examples`` held out."""
    if len(examples) < 2:
        raise DataError(
            f"{task}: {len(examples)} example, too few to hold out a validation set; give validation_annotations"
        )
    n = max(1, round(HELD_OUT * len(examples)))
    held = set(random.Random(SPLIT_SEED).sample(range(len(examples)), n))
    return [e for i, e in enumerate(examples) if i not in held], [
        e for i, e in enumerate(examples) if i in held
    ]


def _subsample(examples: list[VLExample], n: int) -> list[VLExample]:
    """A seeded subsample of ``n`` examples, in their order."""
    if n >= len(examples):
        return examples
    return [examples[i] for i in sorted(random.Random(SPLIT_SEED).sample(range(len(examples)), n))]


def check_images(examples: list[VLExample], store: FeatureStore) -> tuple[int, int]:
    """(regions, feature size) of the images ``examples`` read; every one must be in ``store``, all of one shape.

    Raises:
        DataError: one line naming the first image that is missing or shaped unlike the first one.
    """
    first: tuple[str, tuple[int, int]] | None = None
    seen: set[str] = set()
    for e in examples:
        for image in e.image_ids:
            if image in seen:
                continue
            seen.add(image)
            if image not in store:
                raise DataError(
                    f"image {image!r} of a {e.task} example is not in the feature file {store.path}"
                )
            shape = store.shape(image)
            if first is None:
                first = (image, shape)
            elif shape != first[1]:
                raise DataError(
                    f"{store.path}: image {image!r} has {shape[0]} regions of {shape[1]} features, image "
                    f"{first[0]!r} {first[1][0]} of {first[1][1]}: every image needs the same shape"
                )
    if first is None:
        raise DataError("no examples to read image features for")
    return first[1]
