"""Greedy and beam-search decoding for a LadderModel, with the side network's cache next to the backbone's.

Why not transformers' ``GenerationMixin``: it drives ONE model and ONE cache. LST runs two networks whose caches
(and, for T5, encoder outputs) must be expanded for beams and reordered together; the authors' code got this wrong
in beam search. This module keeps that bookkeeping in one visible place: :class:`_Decoder` owns both caches and
``reorder`` moves them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .cache import LadderCache

if TYPE_CHECKING:  # the model calls this module; importing it back at run time would be a circle
    from .model import LadderModel


class _Decoder:
    """Incremental decoding state: feeds new tokens, returns next-token logits (N, vocab)."""

    def __init__(self, model: LadderModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, beams: int):
        self.model, self.cache = model, LadderCache()
        if model.head == "seq2seq_lm":
            enc = model.encode(input_ids, attention_mask)
            # Expand the encoder states of BOTH networks for the beams (the authors forgot the side's).
            self.encoder_outputs = tuple(e.repeat_interleave(beams, 0) for e in enc)
            self.attention_mask = attention_mask.repeat_interleave(beams, 0)
            start = model.backbone.config.decoder_start_token_id
            self.first_tokens = torch.full((input_ids.shape[0] * beams, 1), start, device=input_ids.device)
            self.first_logits = self.step(self.first_tokens)
        else:
            self.positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens from 0
            out = model(input_ids, attention_mask, position_ids=self.positions, past_key_values=self.cache)
            for cache in (self.cache.backbone, self.cache.side):
                cache.batch_repeat_interleave(beams)
            self.attention_mask = attention_mask.repeat_interleave(beams, 0)
            self.positions = self.positions[:, -1:].repeat_interleave(beams, 0)
            self.first_tokens = input_ids.repeat_interleave(beams, 0)
            self.first_logits = out.logits[:, -1].repeat_interleave(beams, 0)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` (N, 1); return the logits for the next token, (N, vocab)."""
        model = self.model
        if model.head == "seq2seq_lm":
            out = model(
                None,
                self.attention_mask,
                decoder_input_ids=tokens,
                encoder_outputs=self.encoder_outputs,
                past_key_values=self.cache,
            )
        else:
            self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(tokens)], dim=1)
            self.positions = self.positions + 1
            out = model(tokens, self.attention_mask, position_ids=self.positions, past_key_values=self.cache)
        return out.logits[:, -1].float()

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder(index)
        if self.model.head != "seq2seq_lm":
            self.attention_mask = self.attention_mask[index]
            self.positions = self.positions[index]
        # T5 encoder states need no reordering: beams of one example share the same source.


@torch.no_grad()
def generate(
    model: LadderModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 20,
    num_beams: int = 1,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    length_penalty: float = 1.0,
) -> torch.Tensor:
    """Decode from a LadderModel.

    Args:
        model: a seq2seq or causal LadderModel.
        input_ids: (B, T) prompts; decoder-only prompts must be LEFT-padded.
        attention_mask: (B, T); all ones when omitted.
        max_new_tokens: tokens to generate at most.
        num_beams: 1 for greedy decoding, more for beam search.
        eos_token_id: stop token (default: the backbone's).
        pad_token_id: fills finished rows (default: the backbone's, else eos).
        length_penalty: beam scores are divided by length**length_penalty.

    Returns:
        Token ids as transformers returns them: ``[decoder_start, generated...]`` for seq2seq,
        ``[prompt, generated...]`` for decoder-only, padded with ``pad_token_id``.
    """
    if model.head not in ("seq2seq_lm", "causal_lm"):
        raise ValueError("generate() needs a seq2seq or causal LM LadderModel")
    config = model.backbone.config
    eos = config.eos_token_id if eos_token_id is None else eos_token_id
    eos = eos[0] if isinstance(eos, list | tuple) else eos
    pad = (
        pad_token_id
        if pad_token_id is not None
        else (config.pad_token_id if config.pad_token_id is not None else eos)
    )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    was_training = model.training
    model.eval()
    try:
        decoder = _Decoder(model, input_ids, attention_mask, num_beams)
        if num_beams == 1:
            new = _greedy(decoder, max_new_tokens, eos, pad)
        else:
            new, _ = _beam_search(
                decoder, input_ids.shape[0], num_beams, max_new_tokens, eos, pad, length_penalty
            )
    finally:
        model.train(was_training)
    prefix = decoder.first_tokens[::num_beams]
    return torch.cat([prefix, new.to(prefix.device)], dim=1)


def _greedy(decoder: _Decoder, max_new_tokens: int, eos: int, pad: int) -> torch.Tensor:
    logits = decoder.first_logits
    finished = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    tokens = []
    for t in range(max_new_tokens):
        next_tokens = logits.argmax(-1).masked_fill(finished, pad)
        tokens.append(next_tokens)
        finished |= next_tokens == eos
        if finished.all() or t == max_new_tokens - 1:
            break
        logits = decoder.step(next_tokens[:, None])
    return torch.stack(tokens, dim=1)


def _beam_search(decoder, batch: int, beams: int, max_new_tokens: int, eos: int, pad: int, penalty: float):
    """Returns (best sequences (batch, T) padded, their length-penalised log-probabilities (batch,))."""
    logits = decoder.first_logits  # (batch * beams, vocab)
    device = logits.device
    scores = torch.zeros(batch, beams, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: let only the first expand at step one
    sequences = torch.empty(batch * beams, 0, dtype=torch.long, device=device)
    done: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(batch)]
    for t in range(max_new_tokens):
        vocab = logits.shape[-1]
        candidates = (scores.reshape(-1, 1) + torch.log_softmax(logits, -1)).reshape(batch, beams * vocab)
        top_scores, top_ids = candidates.topk(2 * beams, dim=-1)  # (batch, 2 * beams)
        next_scores = torch.full((batch, beams), float("-inf"), device=device)
        next_tokens = torch.full((batch, beams), pad, dtype=torch.long, device=device)
        next_rows = torch.arange(batch * beams, device=device).reshape(batch, beams).clone()
        for b in range(batch):
            filled = 0
            for score, idx in zip(top_scores[b].tolist(), top_ids[b].tolist(), strict=True):
                row, token = b * beams + idx // vocab, idx % vocab
                if score == float("-inf"):
                    break
                if token == eos:  # a finished hypothesis, scored with the length penalty
                    seq = torch.cat([sequences[row], torch.tensor([eos], device=device)])
                    done[b].append((score / (t + 1) ** penalty, seq))
                    continue
                next_scores[b, filled], next_tokens[b, filled], next_rows[b, filled] = score, token, row
                filled += 1
                if filled == beams:
                    break
        rows = next_rows.reshape(-1)
        sequences = torch.cat([sequences[rows], next_tokens.reshape(-1, 1)], dim=1)
        scores = next_scores
        decoder.reorder(rows)
        finished = [
            len(done[b]) >= beams
            and max(s for s, _ in done[b]) >= scores[b].max().item() / (t + 1) ** penalty
            for b in range(batch)
        ]
        if all(finished) or t == max_new_tokens - 1:
            break
        logits = decoder.step(next_tokens.reshape(-1, 1))
    best = []
    for b in range(batch):
        live = [
            (scores[b, k].item() / sequences.shape[1] ** penalty, sequences[b * beams + k])
            for k in range(beams)
        ]
        best.append(max(done[b] + live, key=lambda item: item[0]))
    width = max(len(seq) for _, seq in best)
    out = torch.full((batch, width), pad, dtype=torch.long, device=device)
    for b, (_, seq) in enumerate(best):
        out[b, : len(seq)] = seq
    return out, torch.tensor([score for score, _ in best])
