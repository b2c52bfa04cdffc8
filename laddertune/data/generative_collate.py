"""Batch encoded generative rows: right padding for training, left-padded prompts for ``generate``.

Rows come from :func:`laddertune.data.encode_causal` / :func:`laddertune.data.encode_seq2seq`, or packed by
:func:`laddertune.data.pack_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .truncation import IGNORE_INDEX

__all__ = ["GenerativeCollator"]


def _pad(
    seqs: list[list[int]], value: int, *, left: bool = False, multiple: int | None = None
) -> torch.Tensor:
    """(B, T) long tensor of ``seqs`` padded with ``value`` to the longest (rounded up to ``multiple``)."""
    width = max(map(len, seqs))
    if multiple:
        width = -(-width // multiple) * multiple
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            if left:
                out[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            else:
                out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _mask(seqs: list[list[int]], width: int, *, left: bool = False) -> torch.Tensor:
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        if left:
            mask[i, width - len(s) :] = 1
        else:
            mask[i, : len(s)] = 1
    return mask


@dataclass
class GenerativeCollator:
    """Turns a list of encoded rows into a batch of tensors, padded to the longest row in the batch.

    Training (``generation=False``): ``input_ids`` right-padded with ``pad_token_id``, ``attention_mask``, and
    ``labels`` right-padded with -100 (causal rows: as long as ``input_ids``; seq2seq rows: the longest target).
    Packed rows (they hold ``position_ids``) give ``input_ids``, ``labels`` and ``position_ids`` (padding continues
    the positions from 0 as one more sequence of its own) and NO ``attention_mask``: transformers then finds the
    packed sequences from the positions and masks attention block by block. The model must run with
    ``use_cache=False`` (with a cache, transformers skips that detection); see :mod:`laddertune.data.packing`.

    Generation (``generation=True``): returns ``(batch, references)``; a causal batch holds the prompts
    (``input_ids[:prompt_length]``) left-padded, a seq2seq batch the sources right-padded, both with
    ``attention_mask``; ``references`` are the rows' reference answers, in order.

    Attributes:
        pad_token_id (int): the tokenizer's pad id (``laddertune.core.backbones.load_tokenizer`` sets pad = EOS
            when a tokenizer has none).
        generation (bool): prompts for ``generate`` instead of training batches.
        seq2seq (bool): the rows are encoder-decoder rows (generation keeps right padding).
        pad_to_multiple_of (int | None): round the padded width up (e.g. 8 for tensor cores).
    """

    pad_token_id: int
    generation: bool = False
    seq2seq: bool = False
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.pad_token_id is None:
            raise ConfigError(
                "the tokenizer has no pad token; set tokenizer.pad_token (e.g. to the EOS token)"
            )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")

    def __call__(
        self, rows: list[dict]
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], list[str]]:
        if not rows:
            raise ValueError("cannot collate an empty list of rows")
        m = self.pad_to_multiple_of
        if self.generation:
            left = not self.seq2seq
            seqs = [r["input_ids"] if self.seq2seq else r["input_ids"][: r["prompt_length"]] for r in rows]
            ids = _pad(seqs, self.pad_token_id, left=left, multiple=m)  # (B, T)
            batch = {"input_ids": ids, "attention_mask": _mask(seqs, ids.shape[1], left=left)}
            return batch, [r.get("reference", "") for r in rows]
        seqs = [r["input_ids"] for r in rows]
        ids = _pad(seqs, self.pad_token_id, multiple=m)  # (B, T)
        labels = _pad([r["labels"] for r in rows], IGNORE_INDEX, multiple=m)  # (B, T) or (B, T_target)
        if "position_ids" in rows[0]:
            width = ids.shape[1]
            positions = [r["position_ids"] + list(range(width - len(r["position_ids"]))) for r in rows]
            return {
                "input_ids": ids,
                "labels": labels,
                "position_ids": torch.tensor(positions, dtype=torch.long),
            }
        return {"input_ids": ids, "attention_mask": _mask(seqs, ids.shape[1]), "labels": labels}
