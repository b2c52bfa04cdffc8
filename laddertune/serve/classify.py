"""Classification and regression requests of several side networks on one backbone pass.

Each input is tokenised by its own checkpoint's collator (its text columns, its max length: what ``laddertune
predict`` does), the rows are padded together (on the tokenizer's side), the backbone runs once recording the taps of
every side network present (:meth:`LadderModel.backbone_taps`), and each side network reads its rows' taps, as
:meth:`MultiSideModel.forward_all` does for one task's rows. Answers are :func:`classification_answers`'.
"""

from __future__ import annotations

import torch

from ..core.multi_side import projected
from ..training.prediction import classification_answers


def pad_rows(rows: list[dict], pad_id: int, side: str) -> dict:
    """One batch of single-row encodings ``{key: (1, T_i)}`` padded to the longest on ``side`` (left/right)."""
    width = max(r["input_ids"].shape[1] for r in rows)
    batch = {}
    for key in rows[0]:
        if key == "labels":
            continue
        fill = pad_id if key == "input_ids" else 0
        out = torch.full((len(rows), width), fill, dtype=rows[0][key].dtype)  # (B, T)
        for i, r in enumerate(rows):
            t = r[key][0]
            if side == "left":
                out[i, width - len(t) :] = t
            else:
                out[i, : len(t)] = t
        batch[key] = out
    return batch


@torch.inference_mode()
def classify(items: list[tuple], tokenizer) -> list[dict]:
    """``[(served side, example)]`` -> one answer per item (label/probabilities, or value), in order."""
    rows = [side.collate([example]) for side, example in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = items[0][0].model.device
    batch = {k: v.to(device) for k, v in pad_rows(rows, pad, tokenizer.padding_side).items()}
    groups: dict = {}
    for i, (side, _) in enumerate(items):
        groups.setdefault(side.key, (side, []))[1].append(i)
    runner = items[0][0].model  # any: they hold the same base model
    stack = next(iter(runner.side.stacks))
    layers = sorted({i for side, _ in groups.values() for i in side.model.side.stacks[stack].tap_layers})
    # full-width taps once: each side network narrows them with its own tap projection (they may differ)
    taps = runner.backbone_taps(**batch, layers={stack: layers}, raw=True)[stack]
    answers: list = [None] * len(items)
    for side, index in groups.values():
        idx = torch.tensor(index, device=device)
        sub = {k: v[idx] for k, v in batch.items()}
        wanted = {-1, *side.model.side.stacks[stack].tap_layers}
        side_taps = projected(side.model, {stack: {k: t[idx] for k, t in taps.items() if k in wanted}})
        logits = side.model(**sub, taps=side_taps).logits  # (b, labels)
        for i, answer in zip(index, classification_answers(logits, side.task), strict=True):
            answers[i] = answer
    return answers
