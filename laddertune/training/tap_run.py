"""A run's use of the tap cache: open (or build) it over the training examples and batch through it."""

from __future__ import annotations

from collections.abc import Callable

from ..taps import open_tap_cache
from .config import TrainConfig


def use_tap_cache(config: TrainConfig, model, data, log: Callable[[dict], None]):
    """Open the cache of ``config.tap_cache`` for the training split and wrap ``data.collate`` so that each training
    batch carries its taps (the backbone does not run in training steps). Evaluation still runs the backbone.

    Returns:
        The :class:`~laddertune.taps.TapCache`; its build (or reuse) is logged as ``tap_cache`` records.
    """

    def notify(message: str) -> None:
        log({"type": "tap_cache", "message": message})

    cache = open_tap_cache(
        config.tap_cache,
        model,
        data.tokenizer,
        data.splits.train,
        data.collate,
        max_length=config.max_length,
        fmt=data.fmt,
        dtype=config.tap_dtype,
        batch_size=config.eval_batch_size,
        notify=notify,
    )
    log(
        {
            "type": "tap_cache",
            "message": f"tap cache: {'built' if cache.built else 'reused'} {cache.path.name}",
            "built": cache.built,
            "build_seconds": cache.build_seconds,
            "bytes": cache.bytes,
        }
    )
    layers = {name: list(stack.tap_layers) for name, stack in model.side.stacks.items()}
    data.collate = cache.collate(data.collate, layers)
    return cache
