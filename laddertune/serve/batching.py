"""Decoding one batch whose rows belong to different side networks: one backbone pass, then each side on its rows.

Why not transformers' ``generate()``: it drives ONE model over a batch fixed from the first step to the last. A
LadderModel's ``generate()`` runs its own side network on every row, so rows of four tasks would need four
``generate()`` calls and four backbone passes per step; and no row can join or leave a running ``generate()``, so a
request arriving one step later waits for the whole batch to finish. :class:`MixedBatch` does what neither allows:

* the backbone runs once per step over every row (recording the taps that any side network of the batch reads) and
  keeps one key/value cache for all rows;
* each side network runs on the taps of its own rows, with its own cache holding only those rows (side caches are as
  many as the side networks in the batch), and makes its rows' LM-head inputs (up-projection plus the backbone's
  final state, :meth:`LadderModel.lm_head_input`); the backbone's frozen LM head then runs once over every row, as
  :meth:`LadderModel.lm_logits` would per side network (the head is the largest single matrix of a small LM:
  SmolLM2's is 49,152 x 576, read once per step instead of once per side network);
* rows join (:meth:`MixedBatch.add`: the newcomers are prefilled together, then their caches are left-padded and
  stacked onto the running batch's, :mod:`.kv`) and leave (:meth:`MixedBatch.remove`) between any two steps.

Each row computes what its side network's own ``generate()`` computes on it: the same backbone and side forwards
(left padding, positions counted from the attention mask as ``generate()`` counts them, the final shortcut, the LM
head on the last position), only inside a larger batch. Greedy answers are therefore the same tokens (checked
against ``generate()`` in tests/test_serve_batching.py); sampling draws from the same distribution.

A forward that raises is retried row by row (after cutting the caches back to where they were), so a request that
fails inside the model fails alone and the rest of its batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache

from ..core.cache_names import CACHE, output_cache
from ..core.multi_side import projected
from ..core.side_network import EMBED
from . import kv

STACK = "body"  # decoder-only LMs: one stack


@dataclass
class Segment:
    """Rows with their state: the attention mask over the cached columns and the caches.

    ``rows[i].side`` is row i's side network (anything with ``key``, unique per loaded side network, and ``model``, a
    causal :class:`~laddertune.core.LadderModel`). ``caches[key]`` holds side ``key``'s rows, in batch order.
    """

    rows: list
    mask: torch.Tensor | None = None  # (B, L) 1 for a token, 0 for left padding
    backbone: DynamicCache | None = None
    caches: dict = field(default_factory=dict)

    @property
    def columns(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]


def groups(rows: list) -> dict:
    """``{side key: (side, [row indices])}`` in order of first appearance."""
    out: dict = {}
    for i, row in enumerate(rows):
        out.setdefault(row.side.key, (row.side, []))[1].append(i)
    return out


def positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions of a left-padded prompt batch, as ``generate()`` derives them (padding at 0)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def forward(rows: list, ids, mask, pos, backbone, caches: dict) -> tuple[torch.Tensor, Segment]:
    """Both networks over ``rows``: the backbone once, then each side network on its rows.

    Args:
        rows: the rows, each with its ``side``.
        ids: (B, T) new token ids; mask: (B, L + T) the attention mask over cached and new columns; pos: (B, T)
            the new tokens' positions; backbone: the backbone's cache of the L cached columns (None: prefill);
            caches: ``{side key: cache}`` of the same columns.

    Returns:
        (the logits of each row's last position (B, vocab) float32, the rows' new :class:`Segment`).
    """
    sides = groups(rows)
    runner = rows[0].side.model  # any of them: they hold the same backbone
    layers = sorted({i for side, _ in sides.values() for i in side.model.side.stacks[STACK].tap_layers})
    # full-width taps once: each side network narrows them with its own tap projection (they may differ)
    out, taps = runner.run_backbone(
        STACK, ids, layers=layers, attention_mask=mask, position_ids=pos, raw=True,
        use_cache=True, **{CACHE: backbone},
    )  # fmt: skip
    head_inputs: list = [None] * len(rows)
    new_caches = {}
    for key, (side, index) in sides.items():
        model, idx = side.model, torch.tensor(index, device=ids.device)
        wanted = {EMBED, *model.side.stacks[STACK].tap_layers}
        side_taps = {k: t[idx.to(t.device)] for k, t in taps.items() if k in wanted}
        side_taps = projected(model, {STACK: side_taps})[STACK]
        side_out = model.run_side(
            STACK, side_taps, attention_mask=mask[idx], position_ids=pos[idx],
            use_cache=True, **{CACHE: caches.get(key)},
        )  # fmt: skip
        # the final shortcut adds the backbone's own final state (LadderModel._final); only the last position counts
        final = (
            out.last_hidden_state[idx.to(out.last_hidden_state.device), -1:]
            if model.ladder_config.final_shortcut
            else None
        )
        head_input = model.lm_head_input(side_out.last_hidden_state[:, -1:], final)[:, -1]  # (b, d)
        for j, i in enumerate(index):
            head_inputs[i] = head_input[j]
        new_caches[key] = output_cache(side_out)
    logits = runner.head_logits(torch.stack(head_inputs))  # (B, vocab): the shared head, once
    return logits, Segment(list(rows), mask, output_cache(out), new_caches)


def merge(segments: list[Segment]) -> Segment:
    """One segment of the rows of ``segments``, in order: every cache left-padded to the longest, then stacked."""
    segments = [s for s in segments if s.rows]
    if len(segments) == 1:
        return segments[0]
    if not segments:
        return Segment([])
    width = max(s.columns for s in segments)
    masks, backbones, caches = [], [], {}
    for s in segments:
        pad = width - s.columns
        masks.append(torch.cat([s.mask.new_zeros(len(s.rows), pad), s.mask], 1))
        backbones.append(kv.left_pad(s.backbone, pad))
        for key, cache in s.caches.items():
            caches.setdefault(key, []).append(kv.left_pad(cache, pad))
    backbone = backbones[0]
    for other in backbones[1:]:
        backbone = kv.concat(backbone, other)
    joined = {}
    for key, parts in caches.items():
        joined[key] = parts[0]
        for other in parts[1:]:
            joined[key] = kv.concat(joined[key], other)
    return Segment([r for s in segments for r in s.rows], torch.cat(masks), backbone, joined)


def subset(segment: Segment, keep: list[int]) -> Segment:
    """The rows ``keep`` (ascending indices) of ``segment``, without the columns that only padding is left in."""
    if not keep:
        return Segment([])
    rows = [segment.rows[i] for i in keep]
    device = segment.mask.device
    mask = segment.mask[torch.tensor(keep, device=device)]
    backbone = kv.select(segment.backbone, torch.tensor(keep, device=device))
    caches = {}
    kept = set(keep)
    for key, (_, index) in groups(segment.rows).items():
        local = [j for j, i in enumerate(index) if i in kept]
        if local:
            caches[key] = kv.select(segment.caches[key], torch.tensor(local, device=device))
    # (B, L): leading columns where every row pads: the rows that left took them
    unused = int((mask.sum(0) == 0).long().cumprod(0).sum())
    if unused:
        mask = mask[:, unused:]
        backbone = kv.drop_left(backbone, unused)
        caches = {k: kv.drop_left(c, unused) for k, c in caches.items()}
    return Segment(rows, mask, backbone, caches)


class MixedBatch:
    """The running batch of a server: rows of any side networks of one backbone, decoding together.

    Rows are the caller's objects with ``side`` (see :class:`Segment`) and ``prompt`` (token ids); the batch keeps
    them in :attr:`rows`, in the order of the logits it returns.
    """

    def __init__(self) -> None:
        self.state = Segment([])

    @property
    def rows(self) -> list:
        return self.state.rows

    def __len__(self) -> int:
        return len(self.state.rows)

    @torch.inference_mode()
    def add(self, rows: list) -> tuple[list, torch.Tensor | None, list]:
        """Prefill ``rows`` together (one backbone pass) and let them join the batch.

        Returns:
            (the rows that joined, their next-token logits (n, vocab), ``[(row, exception)]`` for rows whose
            prefill failed: they are not in the batch).
        """
        if not rows:
            return [], None, []
        try:
            logits, segment = _prefill(rows)
            failures = []
        except Exception:  # noqa: BLE001 (any failure inside the model: find the row, keep the rest)
            results, failures = _one_by_one(rows, _prefill)
            segment = merge([s for _, s in results])
            logits = torch.cat([lg for lg, _ in results]) if results else None
        self.state = merge([self.state, segment])
        return segment.rows, logits, failures

    @torch.inference_mode()
    def step(self, tokens: list[int]) -> tuple[torch.Tensor | None, list]:
        """Append each row's next token (``tokens[i]`` for ``rows[i]``) and compute the logits after it.

        Returns:
            (logits (B', vocab) of the rows still in :attr:`rows`, ``[(row, exception)]`` of the rows whose forward
            failed, which have left the batch).
        """
        state = self.state
        ids = torch.tensor(tokens, device=state.mask.device)[:, None]  # (B, 1)
        mask = torch.cat([state.mask, state.mask.new_ones(len(tokens), 1)], 1)  # (B, L + 1)
        pos = state.mask.sum(1, keepdim=True)  # (B, 1): tokens before the new one
        try:
            logits, self.state = forward(state.rows, ids, mask, pos, state.backbone, state.caches)
            return logits, []
        except Exception:  # noqa: BLE001
            columns = state.columns  # layers the failed forward reached hold one column more: cut it off
            kv.truncate(state.backbone, columns)
            for cache in state.caches.values():
                kv.truncate(cache, columns)

        def one(rows, i):
            row_state = subset_rows(state, [i])
            return forward(
                rows, ids[i : i + 1], mask[i : i + 1], pos[i : i + 1], row_state.backbone, row_state.caches
            )

        results, failures = _one_by_one(state.rows, one, indexed=True)
        self.state = merge([s for _, s in results])
        return (torch.cat([lg for lg, _ in results]) if results else None), failures

    def remove(self, rows) -> None:
        """Drop ``rows`` (finished, cancelled, timed out) from the batch."""
        gone = {id(r) for r in rows}
        keep = [i for i, r in enumerate(self.state.rows) if id(r) not in gone]
        if len(keep) < len(self.state.rows):
            self.state = subset(self.state, keep)


def subset_rows(segment: Segment, keep: list[int]) -> Segment:
    """Rows ``keep`` of ``segment`` with every column kept (a row retried alone keeps the batch's width)."""
    device = segment.mask.device
    index = torch.tensor(keep, device=device)
    caches, kept = {}, set(keep)
    for key, (_, rows) in groups(segment.rows).items():
        local = [j for j, i in enumerate(rows) if i in kept]
        if local:
            caches[key] = kv.select(segment.caches[key], torch.tensor(local, device=device))
    return Segment(
        [segment.rows[i] for i in keep], segment.mask[index], kv.select(segment.backbone, index), caches
    )


def _prefill(rows: list) -> tuple[torch.Tensor, Segment]:
    """Prefill ``rows`` together: their prompts left-padded to the longest."""
    device = rows[0].side.model.device
    width = max(len(r.prompt) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
        mask[i, width - len(r.prompt) :] = 1
    return forward(rows, ids, mask, positions(mask), None, {})


def _one_by_one(rows: list, run, indexed: bool = False) -> tuple[list, list]:
    """``run`` on each row alone: ``([(logits, segment)], [(row, exception)])``."""
    results, failures = [], []
    for i, row in enumerate(rows):
        try:
            results.append(run([row], i) if indexed else run([row]))
        except Exception as e:  # noqa: BLE001 (this row's own failure)
            failures.append((row, e))
    return results, failures
