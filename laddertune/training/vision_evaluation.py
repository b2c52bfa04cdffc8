"""Scoring a vision-and-language model: it generates an answer for every validation example (beam search, the
run's generation settings) and each task is scored by its own metric (VQA score, GQA and NLVR2 accuracy, CIDEr for
captions; :mod:`laddertune.vision.metrics`).

The run's ``score`` (what picks ``checkpoint-best``) is the task's score, or with several tasks their mean (the
paper's Table 3 "Avg."); a multi-task run also reports each task's score under the task's name.
"""

from __future__ import annotations

import math

from tqdm.auto import tqdm

from ..errors import ConfigError
from ..vision.training import generate_vl, score_vl
from .device import model_device


def generation_kwargs(settings) -> dict:
    """``generate()``'s options from a run's :class:`~laddertune.training.config.GenerationSettings` (the answer
    length is each task's own, unless ``max_new_tokens`` is given here as an override)."""
    kw = settings.kwargs()
    kw.pop("max_new_tokens")
    return kw


def generate_answers(
    model,
    examples: list,
    *,
    collate,
    tokenizer,
    batch_size: int,
    generation: dict,
    show_progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """The generated answer of each example, in order (``generation``: ``num_beams``, ``do_sample``...)."""
    with tqdm(total=len(examples), desc=desc, disable=not show_progress, leave=False) as bar:
        return generate_vl(
            model, examples, collate, tokenizer, batch_size=batch_size, device=model_device(model),
            progress=bar.update, **generation,
        )  # fmt: skip


def evaluate_vision(
    model,
    examples: list,
    *,
    collate,
    tokenizer,
    batch_size: int,
    settings,
    show_progress: bool = False,
    desc: str = "eval",
    distributed=None,
) -> dict:
    """Score ``model`` on ``examples`` (x100): ``{"score", ...each task's metrics or scores}``.

    One task: its metric's values (``{"score": 61.2, "vqa_accuracy": 61.2}``); several: ``score`` is their
    mean and each task's score is reported under its name (``{"score": 70.4, "vqa": 61.2, "nlvr": 79.6}``).
    """
    if distributed is not None:  # refused when the run starts; a guard for library callers
        raise ConfigError("vision-and-language evaluation runs in one process")
    if not examples:
        raise ConfigError("no validation examples to score")
    answers = generate_answers(
        model, examples, collate=collate, tokenizer=tokenizer, batch_size=batch_size,
        generation=generation_kwargs(settings), show_progress=show_progress, desc=desc,
    )  # fmt: skip
    per_task = score_vl(examples, answers)
    if len(per_task) == 1:
        return dict(next(iter(per_task.values())))
    scores = {task: metrics["score"] for task, metrics in per_task.items()}
    mean = math.fsum(scores.values()) / len(scores)
    return {"score": mean, **scores}
