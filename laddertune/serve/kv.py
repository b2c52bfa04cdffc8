"""Row surgery on transformers' key/value caches, for a batch whose rows join and leave while it decodes.

transformers' ``DynamicCache`` holds, per layer, keys and values of shape (B, heads, L, head_dim) and offers
``batch_select_indices`` (keep some rows) but no way to add rows: ``generate()`` fixes its batch at the start. A
continuous batch needs the rest, done here on each layer's ``keys``/``values``:

* :func:`left_pad`: add empty columns on the left (the running batch grows to a newcomer's longer prompt, or the
  newcomers to the running batch's length); the attention mask says they are padding, so their zeros are never read;
* :func:`concat`: stack two caches of the same length along the batch;
* :func:`select`: keep rows (a copy: the cache it came from is left as it was);
* :func:`drop_left`: remove columns every row pads (rows that left took the longest history with them);
* :func:`truncate`: cut every layer back to ``length`` columns (a forward that failed half way appended to some
  layers only).

Only full-attention layers (``DynamicLayer``) can be moved this way; a sliding-window layer keeps a rolling window
whose columns do not line up across rows, so :func:`check_layers` refuses caches that have one.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ..errors import ConfigError


def check_layers(cache: DynamicCache, what: str) -> None:
    """Refuse, in one line, a cache with a layer that is not a full-attention ``DynamicLayer``."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise ConfigError(
                f"{what} caches keys and values with {type(layer).__name__} layers (sliding windows): the server "
                "batches full-attention caches only"
            )


def _tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _build(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    return DynamicCache(ddp_cache_data=pairs)


def length(cache: DynamicCache) -> int:
    """The columns (cached positions) of the cache; every layer has as many."""
    return cache.get_seq_length()


def left_pad(cache: DynamicCache, columns: int) -> DynamicCache:
    """The cache with ``columns`` zero columns added on the left of every layer."""
    if columns == 0:
        return cache
    return _build([(_pad(k, columns), _pad(v, columns)) for k, v in _tensors(cache)])


def _pad(t: torch.Tensor, columns: int) -> torch.Tensor:
    # (B, heads, L, head_dim) -> (B, heads, columns + L, head_dim)
    return torch.cat([t.new_zeros(*t.shape[:2], columns, t.shape[3]), t], dim=2)


def concat(first: DynamicCache, second: DynamicCache) -> DynamicCache:
    """The rows of ``first`` then those of ``second`` (same length and layers)."""
    return _build(
        [
            (torch.cat([k1, k2]), torch.cat([v1, v2]))
            for (k1, v1), (k2, v2) in zip(_tensors(first), _tensors(second), strict=True)
        ]
    )


def select(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache with ``rows`` (1D indices) of ``cache``, in that order."""
    return _build([(k[rows], v[rows]) for k, v in _tensors(cache)])


def drop_left(cache: DynamicCache, columns: int) -> DynamicCache:
    """The cache without its first ``columns`` columns."""
    if columns == 0:
        return cache
    return _build([(k[:, :, columns:], v[:, :, columns:]) for k, v in _tensors(cache)])


def truncate(cache: DynamicCache, columns: int) -> None:
    """Cut every layer longer than ``columns`` back to ``columns``, in place."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.shape[2] > columns:
            layer.keys = layer.keys[:, :, :columns]
            layer.values = layer.values[:, :, :columns]
