"""Choosing each row's next token as transformers' ``generate()`` chooses it, one row at a time.

Greedy: the arg max of the logits. Sampling: transformers' own logits warpers in the order ``generate()`` applies them
(temperature, top-k, top-p, min-p), a softmax, then ``torch.multinomial`` on a (1, vocab) row. Each row draws from its
own ``torch.Generator``, seeded by the request (``seed``; choice j of a request uses ``seed + j``), so an answer does
not depend on which other requests shared its batch, and with a seed it is the answer of
``torch.manual_seed(seed); model.generate(prompt, do_sample=True, ...)`` (the same generator algorithm, the same
draws; tests/test_serve_batching.py).

Other processors a checkpoint's ``generation_config`` may set (repetition penalty, bad words...) are not applied:
:func:`unsupported_settings` names them, and the server logs them when it loads the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

# generation_config fields whose processors the server does not run, with the value that means "off"
_OFF = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_length": 0,
    "min_new_tokens": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "exponential_decay_length_penalty": None,
}


def unsupported_settings(config: GenerationConfig) -> list[str]:
    """The fields of ``config`` that ask for a processor the server does not apply."""
    found = []
    for name, off in _OFF.items():
        value = getattr(config, name, off)
        if value not in (off, None) and not (name.endswith("_p") and value == 1.0):
            found.append(f"{name}={value!r}")
    return found


@dataclass(frozen=True)
class Sampling:
    """How one row picks its tokens (``generate()``'s names)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None


def warpers(s: Sampling) -> LogitsProcessorList:
    """The logits warpers ``generate()`` builds for these settings (``_get_logits_processor``'s sampling part)."""
    out = LogitsProcessorList()
    if s.temperature is not None and s.temperature != 1.0:
        out.append(TemperatureLogitsWarper(s.temperature))
    if s.top_k is not None and s.top_k != 0:
        out.append(TopKLogitsWarper(top_k=s.top_k, min_tokens_to_keep=1))
    if s.top_p is not None and s.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=s.top_p, min_tokens_to_keep=1))
    if s.min_p is not None:
        out.append(MinPLogitsWarper(min_p=s.min_p, min_tokens_to_keep=1))
    return out


class Sampler:
    """One row's token picker: greedy, or sampling with its own generator."""

    def __init__(self, settings: Sampling) -> None:
        self.settings = settings
        self.warpers = warpers(settings) if settings.do_sample else None
        self.generator = None
        if settings.do_sample:
            self.generator = torch.Generator()
            if settings.seed is None:
                self.generator.seed()  # a fresh random seed
            else:
                self.generator.manual_seed(settings.seed)

    def __call__(self, logits: torch.Tensor, ids: list[int]) -> int:
        """The next token after ``ids`` (prompt and generated so far) given its (vocab,) float32 ``logits``."""
        if self.warpers is None:
            return int(logits.argmax())
        scores = self.warpers(torch.tensor([ids]), logits[None].clone())  # (1, vocab)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs.cpu(), num_samples=1, generator=self.generator))
