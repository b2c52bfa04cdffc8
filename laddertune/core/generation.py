"""Greedy, sampled and beam-search decoding for a LadderModel, with the side network's cache next to the backbone's.

Why not transformers' ``GenerationMixin``: it drives ONE model and ONE cache. LST runs two networks whose caches
(and, for T5, encoder outputs) must be expanded for beams and reordered together; the authors' code got this wrong
in beam search. This module keeps that bookkeeping in one visible place: :class:`_Decoder` owns both caches and
``reorder`` moves them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import GenerationConfig

from .cache import LadderCache
from .generation_options import resolve

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
    generation_config: GenerationConfig | None = None,
    **kwargs,
) -> torch.Tensor:
    """Decode from a LadderModel, with transformers' generation options.

    Args:
        model: a seq2seq or causal LadderModel.
        input_ids: (B, T) prompts. Decoder-only prompts may be left- or right-padded: right-padded rows (SmolLM2's
            tokenizer pads right) are moved to left padding here, so every row continues after its last token.
        attention_mask: (B, T); all ones when omitted.
        generation_config: a ``GenerationConfig``; keyword arguments override its fields.
        **kwargs: ``GenerationConfig`` fields (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``,
            ``top_p``, ``repetition_penalty``, ``num_beams``, ``num_return_sequences``, ``eos_token_id``,
            ``pad_token_id``, ...), ``logits_processor`` and ``stopping_criteria``; see
            :mod:`laddertune.core.generation_options` for the full list. Without ``max_new_tokens`` or
            ``max_length``, 20 new tokens (laddertune 0.1's default). Sampling draws from torch's global generator:
            ``torch.manual_seed`` makes it reproducible.

    Returns:
        Token ids as transformers returns them: ``[decoder_start, generated...]`` for seq2seq,
        ``[prompt (left-padded), generated...]`` for decoder-only, padded with ``pad_token_id``; with
        ``num_return_sequences=n``, n rows per prompt, one after the other.

    Raises:
        ValueError: a classification model, or an option set that is not supported (named).
        TypeError: an unknown keyword argument.
    """
    if model.head not in ("seq2seq_lm", "causal_lm"):
        raise ValueError("generate() needs a seq2seq or causal LM LadderModel")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    given = {**(generation_config.to_diff_dict() if generation_config is not None else {}), **kwargs}
    if given.get("max_length") is None and given.get("max_new_tokens") is None:
        kwargs["max_new_tokens"] = 20
    plan = resolve(model, input_ids.shape[1], generation_config, kwargs)
    config, beams = plan.config, plan.config.num_beams or 1
    if beams == 1 and not config.do_sample and (config.num_return_sequences or 1) > 1:
        raise ValueError(
            "greedy decoding returns one sequence per prompt: num_return_sequences needs do_sample"
        )
    if model.head == "causal_lm":
        input_ids, attention_mask = _left_align(input_ids, attention_mask, plan.pad)
    copies = config.num_return_sequences or 1
    if copies > 1:
        input_ids, attention_mask = (
            input_ids.repeat_interleave(copies, 0),
            attention_mask.repeat_interleave(copies, 0),
        )
    was_training = model.training
    model.eval()
    try:
        decoder = _Decoder(model, input_ids, attention_mask, beams)
        if beams == 1:
            new = _decode(decoder, plan)
        else:
            eos = plan.eos[0] if plan.eos else -1
            args = (
                input_ids.shape[0],
                beams,
                plan.max_new_tokens,
                eos,
                plan.pad,
                1.0 if config.length_penalty is None else config.length_penalty,
            )
            new, _ = _beam_search(decoder, *args)
    finally:
        model.train(was_training)
    prefix = decoder.first_tokens[::beams]
    return torch.cat([prefix, new.to(prefix.device)], dim=1)


def _left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad: int):
    """Move right-padded rows to left padding (the decoder continues after the LAST column). (B, T) each."""
    if not bool((attention_mask[:, -1] == 0).any()):
        return input_ids, attention_mask
    # A stable sort of "is a token" puts each row's padding first and keeps its tokens in order.
    order = attention_mask.to(torch.int8).argsort(dim=1, stable=True)
    mask = attention_mask.gather(1, order)
    return input_ids.gather(1, order).masked_fill(mask == 0, pad), mask


def _decode(decoder: _Decoder, plan) -> torch.Tensor:
    """Greedy or sampled decoding: transformers' processors over the scores, then argmax or a draw."""
    logits = decoder.first_logits
    finished = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    sequences = decoder.first_tokens.to(logits.device)  # what the processors see, as in transformers
    eos = torch.tensor(plan.eos, device=logits.device, dtype=torch.long)
    tokens = []
    for t in range(plan.max_new_tokens):
        scores = plan.processors(sequences, logits)
        if plan.config.do_sample:
            next_tokens = torch.multinomial(torch.softmax(scores, -1), num_samples=1).squeeze(1)
        else:
            next_tokens = scores.argmax(-1)
        next_tokens = next_tokens.masked_fill(finished, plan.pad)
        tokens.append(next_tokens)
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        finished |= torch.isin(next_tokens, eos)
        if len(plan.stopping):
            finished |= plan.stopping(sequences, scores).to(finished.device)
        if finished.all() or t == plan.max_new_tokens - 1:
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
