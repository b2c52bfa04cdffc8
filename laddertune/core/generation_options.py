"""What ``LadderModel.generate`` accepts, as transformers' ``generate`` does: a ``GenerationConfig`` and/or its
keyword arguments, resolved into one config, transformers' own logits processors and stopping criteria.

Supported: ``max_new_tokens``/``max_length``, ``min_new_tokens``/``min_length``, ``do_sample``, ``temperature``,
``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``, ``no_repeat_ngram_size``, ``num_beams`` (with
``length_penalty``, ``early_stopping``), ``num_return_sequences`` (sampling/greedy), ``eos_token_id`` (one or
several), ``pad_token_id``, ``use_cache`` (always on), plus ``logits_processor`` and ``stopping_criteria`` lists.
Any other option set to a non-default value is a ``ValueError`` naming it, never silently ignored; an unknown
keyword is a ``TypeError``. The processors themselves are transformers' (``LogitsProcessorList``); this module only
chooses them, because ``GenerationMixin`` cannot drive two networks' caches (see :mod:`.generation`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from transformers import GenerationConfig
from transformers.generation import (
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

SUPPORTED = frozenset(
    {
        "max_new_tokens",
        "max_length",
        "min_new_tokens",
        "min_length",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_beams",
        "length_penalty",
        "early_stopping",
        "num_return_sequences",
        "eos_token_id",
        "pad_token_id",
        "bos_token_id",
        "decoder_start_token_id",
        "use_cache",
        "transformers_version",
        "_from_model_config",
    }
)
_EXTRA = ("logits_processor", "stopping_criteria")


@dataclass
class GenerationPlan:
    """The resolved options: the config, the processors over the scores, extra stopping criteria, eos ids."""

    config: GenerationConfig
    processors: LogitsProcessorList
    stopping: StoppingCriteriaList
    eos: list[int]
    pad: int
    max_new_tokens: int


def resolve(
    model, prompt_length: int, generation_config: GenerationConfig | None, kwargs: dict
) -> GenerationPlan:
    """Merge ``generation_config`` and ``kwargs``; refuse what is not supported; choose the processors.

    Args:
        model: the LadderModel (its backbone's config gives the default eos/pad/decoder-start ids).
        prompt_length: T of the prompts: ``max_length`` counts them for decoder-only models, as transformers does.
        generation_config: the base config; default a plain ``GenerationConfig()`` (greedy, 20 tokens): the
            backbone's own generation config is not applied, so a backbone that samples by default does not
            silently change what ``generate()`` returns.
        kwargs: GenerationConfig fields, ``logits_processor``, ``stopping_criteria``.
    """
    extra = {k: kwargs.pop(k) for k in _EXTRA if k in kwargs}
    config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    unknown = config.update(**kwargs)
    if unknown:
        raise TypeError(f"generate() got unexpected keyword argument(s): {', '.join(map(repr, unknown))}")
    unsupported = sorted(k for k in config.to_diff_dict() if k not in SUPPORTED)
    if unsupported:
        raise ValueError(f"LadderModel.generate does not support {', '.join(unsupported)}")
    if (config.num_beams or 1) > 1 and config.do_sample:
        raise ValueError("LadderModel.generate does not support beam sampling (num_beams > 1 with do_sample)")
    if (config.num_beams or 1) > 1 and (config.num_return_sequences or 1) > 1:
        raise ValueError("LadderModel.generate returns one sequence per prompt with beam search")
    backbone = model.backbone.config
    eos = config.eos_token_id if config.eos_token_id is not None else backbone.eos_token_id
    eos = [] if eos is None else list(eos) if isinstance(eos, list | tuple) else [eos]
    pad = config.pad_token_id if config.pad_token_id is not None else backbone.pad_token_id
    pad = pad if pad is not None else (eos[0] if eos else 0)
    decoder_only = model.head == "causal_lm"
    offset = prompt_length if decoder_only else 1  # seq2seq: the decoder starts with one start token
    if config.max_new_tokens is not None:
        max_new = config.max_new_tokens
    else:
        max_new = (config.max_length or 20) - offset
    if max_new < 1:
        raise ValueError(f"max_length={config.max_length} leaves no new token after {offset} prompt token(s)")
    processors = LogitsProcessorList()
    min_new = config.min_new_tokens or max(0, (config.min_length or 0) - offset)
    if min_new and eos:
        processors.append(MinLengthLogitsProcessor(offset + min_new, eos))
    if config.repetition_penalty not in (None, 1.0):
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    processors.extend(extra.get("logits_processor") or [])
    if config.do_sample:  # the warpers, in transformers' order
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            processors.append(TopKLogitsWarper(config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p))
        if config.min_p is not None:
            processors.append(MinPLogitsWarper(config.min_p))
    stopping = StoppingCriteriaList(extra.get("stopping_criteria") or [])
    return GenerationPlan(config, processors, stopping, eos, pad, max_new)
