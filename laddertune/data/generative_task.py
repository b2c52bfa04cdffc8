"""A generative task (instructions, chat, completions, plain text): what the rows are and how they are rendered,
and its splits read from the user's files.

:class:`GenerativeTask` plays for generative data the part :class:`~laddertune.data.tasks.TaskSpec` plays for a
labelled task: it names the task, says how a row becomes tokens (the layout, the prompt format, the chat template,
whether the prompt is learned) and travels in a checkpoint's ``task.json`` so that prediction renders new prompts
exactly as training did. :func:`load_generative_splits` reads the files, detects (or takes) the layout, holds out a
validation set when there is no validation file, and subsamples as asked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import ConfigError, DataError
from .generative import PROMPT_FORMATS
from .layouts import LAYOUTS, normalize_rows
from .loading import PAPER_HOLDOUT, Splits, _shuffled, _subsample
from .rows import read_rows

logger = logging.getLogger(__name__)

GENERATION_METRIC = "generation"  # exact match, token F1, ROUGE-L on generated answers; loss and perplexity


@dataclass(frozen=True)
class GenerativeTask:
    """How a generative task's rows become tokens, and how it is scored."""

    layout: str
    """``prompt_completion``, ``alpaca``, ``chat`` or ``text`` (:mod:`laddertune.data.layouts`)."""
    name: str = "custom"
    """The task's name in run folders and reports."""
    prompt_format: str = "auto"
    """How a prompt and its completion are joined: ``chat`` (a one-turn conversation in the chat template),
    ``plain`` (prompt, separator, completion) or ``auto`` (chat when a template is at hand)."""
    chat_template: str | None = None
    """A Jinja chat template used instead of the tokenizer's (the text itself, so that a checkpoint carries it)."""
    train_on_prompt: bool = False
    """Learn every token, not only the answers."""
    epochs: int = 3
    """Training epochs when the run gives none."""

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(
                f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}"
            )

    # what a labelled task's spec answers, for the code that reads either
    metric: ClassVar[str] = GENERATION_METRIC
    label_names: ClassVar[tuple[str, ...]] = ()
    num_labels: ClassVar[int] = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerativeTask:
        """Inverse of :meth:`to_dict`; a malformed dict is a :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"a generative task must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown generative task field(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ConfigError(f"malformed generative task: {e}") from None


def generative_layout(train_file: str | os.PathLike, fmt: str | None) -> str | None:
    """The layout of a training file when it holds generative rows: ``fmt`` when it names a layout, else the one
    its columns show; None when the file is a labelled task's (its columns fit no layout) and ``fmt`` names
    none. Only the first rows are read to look."""
    if fmt in LAYOUTS:
        return fmt
    if fmt is not None:  # classification, text2text, causal: a labelled task
        return None
    rows = read_rows(train_file)
    try:
        layout, _ = normalize_rows(rows[:20])
    except DataError:
        return None
    return layout


def load_generative_splits(
    task: GenerativeTask,
    *,
    train_file: str | os.PathLike,
    validation_file: str | os.PathLike | None = None,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> Splits:
    """The generative task's train and validation examples (normalised rows, :func:`normalize_rows`).

    Without a validation file, 10% of the training rows (at most 1000) are held out, seeded by ``seed``.

    Raises:
        DataError: an unreadable file, rows that fit no layout (or another layout than ``task``'s), bad rows.
    """
    layout, train = normalize_rows(read_rows(train_file), task.layout)
    notes, source_paths = [f"layout {layout}"], [str(train_file)]
    source = f"file {train_file}"
    if validation_file is not None:
        _, validation = normalize_rows(read_rows(validation_file), task.layout)
        source += f", {validation_file}"
        source_paths.append(str(validation_file))
    else:
        if len(train) < 2:
            raise DataError(f"{train_file}: one example; holding out a validation set needs two or more")
        shuffled = _shuffled(train, seed)
        k = max(1, min(PAPER_HOLDOUT, len(shuffled) // 10))
        train, validation = shuffled[k:], shuffled[:k]
        notes.append(f"no validation file: {k} train rows held out as the dev set (seed {seed})")
    train = _subsample(train, max_train_samples, seed, "max_train_samples")
    validation = _subsample(validation, max_eval_samples, seed, "max_eval_samples")
    splits = Splits(train, validation, None, task, "dev", seed, source, notes, source_paths)
    logger.info(
        "loaded %s (%s): %d train, %d validation rows", task.name, layout, len(train), len(validation)
    )
    return splits


def read_chat_template(path: str | os.PathLike | None) -> str | None:
    """The text of a ``--chat-template`` file (a Jinja template), or None."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read the chat template {path}: {getattr(e, 'strerror', None) or e}"
        ) from None
    if not text.strip():
        raise ConfigError(f"the chat template {path} is empty")
    return text
