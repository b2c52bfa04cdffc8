"""Joint multi-task training and evaluation of a :class:`VisionLadderModel` (VL-Adapter's recipe, docs/concepts.md#fact-clip-t5).

Batches hold one task each (NLVR2's two images, captions' long targets) and the tasks' batches are interleaved at
random, as VL-Adapter's multitask loader does. Defaults are the paper's: AdamW lr 3e-3, weight decay 0.03, linear
schedule with 10% warm-up, gradient clipping 5, 20 epochs, beam 5 at evaluation.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass

import torch
from transformers import get_linear_schedule_with_warmup

from ..errors import ConfigError
from .metrics import vl_metrics
from .tasks import VLExample, get_vl_task

logger = logging.getLogger(__name__)


@dataclass
class VLTrainConfig:
    """The paper's CLIP-T5 settings (docs/concepts.md#fact-clip-t5) as defaults."""

    learning_rate: float = 3e-3
    weight_decay: float = 0.03
    warmup_ratio: float = 0.1
    max_grad_norm: float = 5.0
    epochs: int = 20
    batch_size: int = 32
    num_beams: int = 5
    max_source_length: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.epochs < 1 or self.batch_size < 1 or self.num_beams < 1:
            raise ConfigError(
                "VLTrainConfig: learning_rate, epochs, batch_size and num_beams must be positive"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


class VLCollator:
    """Examples of ONE task -> the model's keyword arguments (text ids, image features and boxes, labels).

    Args:
        tokenizer: a transformers tokenizer (T5's, or any with ``pad_token_id``).
        features: where image features are read, by id (a :class:`FeatureStore` or a dict id -> (feats, boxes)).
        max_source_length: text tokens kept.
        zero_features: feed all-zero features (the text-only control; boxes, the same grid for every image, stay).
    """

    def __init__(self, tokenizer, features, max_source_length: int = 20, zero_features: bool = False) -> None:
        self.tokenizer, self.features = tokenizer, features
        self.max_source_length, self.zero_features = max_source_length, zero_features

    def __call__(self, examples: list[VLExample], with_labels: bool = True) -> dict:
        spec = get_vl_task(examples[0].task)
        enc = self.tokenizer(
            [e.source for e in examples],
            max_length=self.max_source_length,
            truncation=True,
            padding=True,
            return_tensors="pt",
        )
        feats, boxes = zip(*(self._image(i) for e in examples for i in e.image_ids), strict=True)
        b, v = len(examples), spec.images
        vis_feats = torch.stack(feats).reshape(b, v, *feats[0].shape)  # (B, V, N, F)
        if self.zero_features:
            vis_feats = torch.zeros_like(vis_feats)
        batch = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "vis_feats": vis_feats,
            "vis_boxes": torch.stack(boxes).reshape(b, v, *boxes[0].shape),  # (B, V, N, 4)
        }
        if with_labels:
            labels = self.tokenizer(
                [e.target for e in examples],
                max_length=spec.max_target_tokens,
                truncation=True,
                padding=True,
                return_tensors="pt",
            )["input_ids"]
            batch["labels"] = labels.masked_fill(labels == self.tokenizer.pad_token_id, -100)
        return batch

    def _image(self, image_id: str):
        return self.features[image_id]


def task_batches(examples: list[VLExample], batch_size: int, rng: random.Random, shuffle: bool = True):
    """Per-task batches of ``examples``, the tasks' batches interleaved at random (multi-task training)."""
    by_task: dict[str, list[VLExample]] = defaultdict(list)
    for e in examples:
        by_task[e.task].append(e)
    batches = []
    for task in sorted(by_task):
        items = list(by_task[task])
        if shuffle:
            rng.shuffle(items)
        batches += [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def train_vl(model, examples: list[VLExample], collator: VLCollator, config: VLTrainConfig) -> list[float]:
    """Train ``model`` (its trainable parameters only) on ``examples`` of any tasks jointly; returns the losses."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = config.epochs * len(task_batches(examples, config.batch_size, rng, shuffle=False))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps), steps)
    model.train()
    losses = []
    for epoch in range(config.epochs):
        start = len(losses)
        for batch in task_batches(examples, config.batch_size, rng):
            loss = model(**collator(batch)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        logger.info("epoch %d: mean loss %.4f", epoch, sum(losses[start:]) / max(1, len(losses) - start))
    return losses


@torch.no_grad()
def generate_vl(
    model,
    examples: list[VLExample],
    collator: VLCollator,
    tokenizer,
    *,
    batch_size: int = 64,
    num_beams: int = 5,
    max_new_tokens: int | None = None,
    device: torch.device | None = None,
    progress=None,
    **generate_kwargs,
) -> list[str]:
    """The generated text of every example, in the examples' order.

    Batches hold one task each (in the examples' order within a task). ``max_new_tokens``: each task's own
    answer length when None. ``device``: where the batches go (the model's). ``progress(n)`` is called after each
    batch of n examples. ``generate_kwargs``: more of ``model.generate``'s options (``do_sample``...). The model is
    left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_task[e.task].append(i)
    texts: list[str] = [""] * len(examples)
    for task in sorted(by_task):
        spec, indices = get_vl_task(task), by_task[task]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            inputs = collator([examples[i] for i in chunk], with_labels=False)
            if device is not None:
                inputs = {k: v.to(device) for k, v in inputs.items()}
            out = model.generate(
                inputs["input_ids"],
                inputs["attention_mask"],
                inputs["vis_feats"],
                inputs["vis_boxes"],
                max_new_tokens=max_new_tokens or spec.max_target_tokens,
                num_beams=num_beams,
                **generate_kwargs,
            )
            for i, text in zip(chunk, tokenizer.batch_decode(out, skip_special_tokens=True), strict=True):
                texts[i] = text
            if progress is not None:
                progress(len(chunk))
    model.train(was_training)
    return texts


def score_vl(examples: list[VLExample], predictions: list[str]) -> dict[str, dict[str, float]]:
    """Each task's metrics (:func:`vl_metrics`, x100) of ``predictions`` against the examples' references."""
    preds: dict[str, list[str]] = defaultdict(list)
    refs: dict[str, list] = defaultdict(list)
    for e, p in zip(examples, predictions, strict=True):
        preds[e.task].append(p)
        refs[e.task].append(e.references)
    return {task: vl_metrics(get_vl_task(task).metric, preds[task], refs[task]) for task in sorted(preds)}


def evaluate_vl(
    model, examples: list[VLExample], collator: VLCollator, tokenizer, *, batch_size=64, num_beams=5
):
    """Generate for every example and score each task with its metric; returns ``{task: metrics}``."""
    predictions = generate_vl(
        model, examples, collator, tokenizer, batch_size=batch_size, num_beams=num_beams
    )
    return score_vl(examples, predictions)
