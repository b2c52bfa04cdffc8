"""What a run is fed and how long it lasts: its data (splits, format, tokenizer, batcher) and its schedule.

:func:`load_run_data` reads a run's data as its config says, for training and for ``evaluate``: a labelled task
(GLUE or the user's labelled file: :func:`laddertune.data.load_splits`, batched by :mod:`laddertune.data.collate`)
or generative rows (instructions, chat, completions, text: :mod:`laddertune.data.generative_task`, tokenised and
batched by :mod:`.generative`), whose head is the backbone's LM head, or a vision-and-language task's examples and
image features (:mod:`.vision_data`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..core.backbones import load_tokenizer
from ..data import load_splits, make_collator
from ..data.generative_task import (
    GenerativeTask,
    generative_layout,
    load_generative_splits,
    read_chat_template,
)
from ..data.layouts import LAYOUTS
from ..vision.tasks import is_vl_run_task
from .build import choose_format, clamp_max_length, epoch_batches
from .config import TrainConfig
from .generative import GenerativeData, prepare_generative
from .vision_data import FORMAT, HEAD, VisionData, load_vision_data


@dataclass
class RunData:
    """The data side of a run: splits, task spec, format and head, tokenizer and the training batcher."""

    splits: object
    fmt: str
    head: str
    tokenizer: object
    collate: Callable[[list[dict]], dict]
    generative: GenerativeData | None = None
    """Generative rows: their encoded splits, batchers and counts (``splits`` then holds the encoded rows)."""
    vision: VisionData | None = None
    """A vision-and-language task: its feature file, visual input and per-task batches (``splits`` holds its
    examples)."""

    @property
    def spec(self):
        return self.splits.spec

    def fingerprint(self) -> str:
        """A hash of the training and validation examples as the run reads them (what resume compares)."""
        digest = hashlib.sha256()
        for split in (self.splits.train, self.splits.validation):
            digest.update(json.dumps(split, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]

    def epoch_batches(self, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
        """One epoch's batches as indices of the training split (a vision-and-language run's: one task each)."""
        if self.vision is not None:
            return self.vision.epoch_batches(seed, epoch)
        return epoch_batches(len(self.splits.train), batch_size, seed, epoch)

    def batch_count(self, batch_size: int) -> int:
        """How many batches :meth:`epoch_batches` gives."""
        if self.vision is not None:
            return self.vision.batch_count()
        return math.ceil(len(self.splits.train) / batch_size)

    def eval_kwargs(self, config: TrainConfig, show_progress: bool) -> dict:
        if self.vision is not None:
            return {
                "collate": self.collate,
                "tokenizer": self.tokenizer,
                "batch_size": config.optimization.eval_batch_size,
                "settings": config.generation,
                "show_progress": show_progress,
            }
        if self.generative is not None:
            return {
                "data": self.generative,
                "tokenizer": self.tokenizer,
                "batch_size": config.optimization.eval_batch_size,
                "settings": config.generation,
                "generate": config.generation.eval_generate,
                "show_progress": show_progress,
            }
        return {
            "spec": self.spec,
            "fmt": self.fmt,
            "tokenizer": self.tokenizer,
            "batch_size": config.optimization.eval_batch_size,
            "max_length": config.data.max_length,
            "show_progress": show_progress,
        }


def load_run_data(config: TrainConfig, *, training: bool = True) -> RunData:
    """The run's data as ``config`` says (``training=False``: for ``evaluate``, no training subsample).

    The format and head: a generative layout when the data is generative rows (given by ``format`` or found in
    the training file's columns; the head is then the backbone's LM head), else the labelled task's format.
    ``config.data.max_length`` is clamped to the backbone's positions first.
    """
    data = config.data
    model = config.model
    if is_vl_run_task(data.task):  # image features and annotations: vision_data
        vision = load_vision_data(config, training=training)
        return RunData(vision.splits, FORMAT, HEAD, vision.tokenizer, vision.collate, vision=vision)
    custom = data.task.lower() == "custom"
    # a labelled file names its text column; generative rows are known by their own columns
    labelled = data.text_column is not None and data.format not in LAYOUTS
    layout = generative_layout(data.train_file, data.format) if custom and not labelled else None
    if layout is None:
        kwargs = data.load_kwargs() if training else {**data.load_kwargs(), "max_train_samples": None}
        splits = load_splits(data.task, **kwargs)
        fmt, head = choose_format(model.backbone, data.format, model.trust_remote_code, spec=splits.spec)
        clamp_max_length(config)
        tokenizer = load_tokenizer(model.backbone, trust_remote_code=model.trust_remote_code)
        collate = make_collator(tokenizer, fmt=fmt, spec=splits.spec, max_length=data.max_length)
        return RunData(splits, fmt, head, tokenizer, collate)
    fmt, head = choose_format(model.backbone, layout, model.trust_remote_code)
    clamp_max_length(config)
    tokenizer = load_tokenizer(model.backbone, trust_remote_code=model.trust_remote_code)
    task = GenerativeTask(
        layout,
        prompt_format=data.prompt_format,
        chat_template=read_chat_template(data.chat_template),
        train_on_prompt=data.train_on_prompt,
    )
    splits = load_generative_splits(
        task,
        train_file=data.train_file,
        validation_file=data.validation_file,
        max_train_samples=data.max_train_samples if training else None,
        max_eval_samples=data.max_eval_samples,
    )
    generative = prepare_generative(
        task,
        splits,
        tokenizer,
        head,
        max_length=data.max_length,
        max_new_tokens=config.generation.max_new_tokens,
        packing=data.packing,
    )
    encoded = dataclasses.replace(splits, train=generative.train, validation=generative.validation)
    return RunData(encoded, layout, head, tokenizer, generative.collate, generative)


@dataclass
class Schedule:
    """The run's length and learning-rate schedule, resolved from the config and the task."""

    epochs: int
    steps_per_epoch: int
    total_steps: int
    warmup: int
    lr: float
