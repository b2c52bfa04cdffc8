"""Pack several short encoded rows into sequences of at most ``max_length`` tokens, without cross-row leakage.

Each packed sequence concatenates whole rows (best-fit decreasing: rows longest first, each into the fullest
sequence it still fits, so sequences fill up and a row is never split). Per row, ``position_ids`` restart at 0,
and the row's first label is set to -100: a causal LM's loss predicts label ``t`` from token ``t - 1``, which in a
packed sequence is the previous row's last token (in an unpacked row that label is never used either).

Attention: transformers (checked on 5.23 with Llama and GPT-2, eager and sdpa) finds packed sequences
from ``position_ids`` when ``attention_mask`` is None and builds a block-diagonal causal mask
(``transformers.masking_utils.find_packed_sequence_indices``). It does so only WITHOUT a cache: a causal LM
called with the default ``use_cache=True`` makes a ``DynamicCache`` even in training and then ignores the packing,
so rows attend to the rows before them. Call the model with ``use_cache=False`` (and no ``attention_mask``), as
:class:`laddertune.data.GenerativeCollator` batches packed rows; or pass :func:`block_causal_mask` as an explicit
4D ``attention_mask``, which transformers uses as it is.
"""

from __future__ import annotations

import bisect
import logging

import torch

from ..errors import ConfigError
from .truncation import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["block_causal_mask", "pack_rows", "sequence_ids"]


def pack_rows(rows: list[dict], max_length: int) -> list[dict]:
    """Pack encoded causal rows (``input_ids`` + ``labels``) into sequences of at most ``max_length`` tokens.

    Args:
        rows (list[dict]): rows of :func:`laddertune.data.encode_causal` (training mode).
        max_length (int): the longest packed sequence, in tokens.

    Returns:
        list[dict]: ``{"input_ids", "labels", "position_ids", "num_rows"}`` per packed sequence (lists), in a
        deterministic order (by the first row packed into each).

    Raises:
        ConfigError: ``max_length`` < 1, a row without labels, or a row longer than ``max_length``.
    """
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    for r in rows:
        if "labels" not in r or len(r["labels"]) != len(r["input_ids"]):
            raise ConfigError(
                f"{r.get('location', '?')}: packing needs causal training rows (labels as long as input_ids)"
            )
        if len(r["input_ids"]) > max_length:
            raise ConfigError(
                f"{r.get('location', '?')}: a row of {len(r['input_ids'])} tokens cannot be packed into "
                f"{max_length}; encode with the same max_length"
            )
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]["input_ids"]), i))
    bins: list[list[int]] = []
    free: list[
        tuple[int, int]
    ] = []  # (room left, bin), sorted: the fullest bin that fits is found by bisection
    for i in order:
        need = len(rows[i]["input_ids"])
        k = bisect.bisect_left(free, (need, -1))
        if k == len(free):
            bins.append([i])
            room, b = max_length - need, len(bins) - 1
        else:
            room, b = free.pop(k)
            bins[b].append(i)
            room -= need
        if room > 0:
            bisect.insort(free, (room, b))
    packed = []
    for members in bins:
        ids, labels, positions = [], [], []
        for i in members:
            r = rows[i]
            ids += r["input_ids"]
            labels += [IGNORE_INDEX] + r["labels"][1:]
            positions += range(len(r["input_ids"]))
        packed.append(
            {"input_ids": ids, "labels": labels, "position_ids": positions, "num_rows": len(members)}
        )
    tokens = sum(len(p["input_ids"]) for p in packed)
    if packed:
        logger.info(
            "packed %d rows into %d sequences of <= %d tokens (%.1f%% filled)",
            len(rows),
            len(packed),
            max_length,
            100 * tokens / (len(packed) * max_length),
        )
    return packed


def sequence_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) index of the packed sequence each token belongs to: a new one starts wherever the position does not
    go up by exactly 1 (the rule of ``transformers.masking_utils.find_packed_sequence_indices``)."""
    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)


def block_causal_mask(position_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An explicit block-diagonal causal mask for packed sequences, shape (B, 1, T, T).

    Args:
        position_ids (torch.Tensor): (B, T) positions restarting at 0 for each packed row.
        dtype (torch.dtype | None): None -> bool (True = attend; for ``sdpa``); a float dtype -> additive (0 where
            attended, the dtype's minimum elsewhere; for ``eager``, in the model's compute dtype).

    Returns:
        torch.Tensor: the mask; transformers passes a 4D ``attention_mask`` through unchanged.
    """
    seq = sequence_ids(position_ids)  # (B, T)
    t = position_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=position_ids.device).tril()  # (T, T)
    allowed = (seq[:, :, None] == seq[:, None, :]) & causal  # (B, T, T): same row and not in the future
    allowed = allowed[:, None]  # (B, 1, T, T)
    if dtype is None:
        return allowed
    zero = torch.zeros((), dtype=dtype, device=position_ids.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)
