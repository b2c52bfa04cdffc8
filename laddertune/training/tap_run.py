"""A run's use of the tap cache: open (or build) it over the run's examples and batch through it."""

from __future__ import annotations

from collections.abc import Callable

from ..taps import TapCache, open_tap_cache
from .config import TrainConfig

# Evaluation reads cached taps only where a batch's prediction is one forward of the given tokens. Generated answers
# (text-to-text, causal) feed the model its own outputs, unknown before decoding: those evaluations run the backbone.
CACHED_EVAL_FORMATS = ("classification",)


def use_tap_cache(config: TrainConfig, model, data, log: Callable[[dict], None]) -> dict[str, Callable]:
    """Open the cache entries of ``config.data.tap_cache`` and wrap the batchers so that batches carry their taps.

    The training split's entry always; for classification runs also one entry per evaluation split (validation,
    test), so that a cached run's evaluation never runs the backbone either. Each split is its own entry (its
    own data hash): a change to ``max_eval_samples`` rebuilds the validation entry only. ``data.collate`` (the
    training batcher) is replaced by one that adds ``taps``; builds and reuses are logged as ``tap_cache`` records.

    Returns:
        For each cached evaluation split, a function that adds a collated batch's ``taps`` to it (pass it as
        ``add_taps`` to :func:`~laddertune.training.evaluation.evaluate_examples`).
    """
    layers = {name: list(stack.tap_layers) for name, stack in model.side.stacks.items()}
    splits = {"train": data.splits.train}
    if data.fmt in CACHED_EVAL_FORMATS:
        splits["validation"] = data.splits.validation
        if data.splits.test is not None:
            splits["test"] = data.splits.test
    caches = {split: _open(config, model, data, split, examples, log) for split, examples in splits.items()}
    data.collate = caches.pop("train").collate(data.collate, layers)
    return {split: _adder(cache, layers) for split, cache in caches.items()}


def _open(config: TrainConfig, model, data, split: str, examples: list[dict], log) -> TapCache:
    def notify(message: str) -> None:
        log({"type": "tap_cache", "split": split, "message": message})

    cache = open_tap_cache(
        config.data.tap_cache,
        model,
        data.tokenizer,
        examples,
        data.collate,
        max_length=config.data.max_length,
        fmt=data.fmt,
        dtype=config.data.tap_dtype,
        batch_size=config.optimization.eval_batch_size,
        notify=notify,
    )
    log(
        {
            "type": "tap_cache",
            "split": split,
            "message": f"tap cache ({split}): {'built' if cache.built else 'reused'} {cache.path.name}",
            "built": cache.built,
            "build_seconds": cache.build_seconds,
            "bytes": cache.bytes,
        }
    )
    return cache


def _adder(cache: TapCache, layers: dict[str, list[int]]) -> Callable[[dict], dict]:
    return lambda batch: {**batch, "taps": cache.taps(batch, layers)}
