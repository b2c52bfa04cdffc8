"""What a run is fed and how long it lasts: its data (splits, format, tokenizer, batcher) and its schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import TrainConfig


@dataclass
class RunData:
    """The data side of a run: splits, task spec, format and head, tokenizer and the training batcher."""

    splits: object
    fmt: str
    head: str
    tokenizer: object
    collate: Callable[[list[dict]], dict]

    @property
    def spec(self):
        return self.splits.spec

    def eval_kwargs(self, config: TrainConfig, show_progress: bool) -> dict:
        return {
            "spec": self.spec,
            "fmt": self.fmt,
            "tokenizer": self.tokenizer,
            "batch_size": config.optimization.eval_batch_size,
            "max_length": config.data.max_length,
            "show_progress": show_progress,
        }


@dataclass
class Schedule:
    """The run's length and learning-rate schedule, resolved from the config and the task."""

    epochs: int
    steps_per_epoch: int
    total_steps: int
    warmup: int
    lr: float
