"""What transformers' ``generate()`` needs of a LadderModel, so that every decoding strategy runs over both networks.

``GenerationMixin`` drives one model through its ``forward``, one ``Cache`` and, for an encoder-decoder, one encoder
output. A LadderModel gives it exactly that:

* the cache is a :class:`~laddertune.core.cache.LadderCache`, which holds the backbone's and the side network's
  caches and reorders, crops and repeats both together (beam search, assisted decoding);
* an encoder-decoder's encoder (:meth:`LadderModel.get_encoder`) runs both encoders and returns one
  :class:`LadderEncoderOutput` with both last hidden states, so ``generate()`` expands both for beams and
  ``num_return_sequences`` (the authors' beam search forgot the side's);
* ``forward`` takes what ``prepare_inputs_for_generation`` passes (the cache, ``position_ids``,
  ``encoder_outputs``, ``logits_to_keep``).

Greedy, sampling, beam search (and beam sampling), ``num_return_sequences``, assisted and prompt-lookup decoding,
logits processors, stopping criteria, ``stop_strings``, streamers and ``GenerationConfig`` files are then
transformers' own, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.modeling_outputs import BaseModelOutput

from .cache import LadderCache
from .cache_names import CACHE


@dataclass
class LadderEncoderOutput(BaseModelOutput):
    """Both encoders' outputs, as one ``ModelOutput`` (so ``generate()`` expands every tensor in it for beams).

    Args:
        last_hidden_state: (B, S, d) the backbone encoder's states; None when the encoder ran on cached taps.
        side_last_hidden_state: (B, S', d/r) the side encoder's states.
        side_attention_mask: (B, S') the side decoder's cross-attention mask when the side encoder's input is longer
            than the source (the vision-and-language side encoder adds image positions); None: the source's mask.
    """

    side_last_hidden_state: torch.Tensor | None = None
    side_attention_mask: torch.Tensor | None = None


def encoder_states(encoder_outputs) -> tuple:
    """(backbone states, side states, side mask or None) of a :class:`LadderEncoderOutput` or of the tuple
    ``(backbone states, side states[, side mask])`` that :meth:`LadderModel.encode` returns."""
    if isinstance(encoder_outputs, LadderEncoderOutput):
        o = encoder_outputs
        return o.last_hidden_state, o.side_last_hidden_state, o.side_attention_mask
    backbone, side, *rest = encoder_outputs
    return backbone, side, rest[0] if rest else None


class LadderEncoder:
    """An encoder-decoder LadderModel's encoder as ``generate()`` calls it: both encoders, one output.

    Not a module: it holds the model (whose weights it runs) without registering it again.
    """

    main_input_name = "input_ids"

    def __init__(self, model) -> None:
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> LadderEncoderOutput:
        """Run the backbone encoder and the side encoder on (B, S) ``input_ids``."""
        for name, value in (
            ("output_attentions", output_attentions),
            ("output_hidden_states", output_hidden_states),
        ):
            if value:
                raise ValueError(
                    f"a LadderModel's encoder does not return {name}: its states are two networks'"
                )
        backbone, side = self.model.encode(input_ids, attention_mask)
        return LadderEncoderOutput(last_hidden_state=backbone, side_last_hidden_state=side)

    __call__ = forward


class LadderGenerationMixin(GenerationMixin):
    """transformers' ``GenerationMixin`` for a LadderModel: its cache and its positional call signature."""

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        """transformers' ``generate()`` over the backbone and the side network; every argument it takes.

        Differences, kept from laddertune 0.1: the second positional argument is ``attention_mask``
        (``model.generate(ids, mask, max_new_tokens=8)``; a ``GenerationConfig`` there is taken as
        ``generation_config``, transformers' order), and right-padded decoder-only prompts (SmolLM2's tokenizer pads
        right) are moved to left padding first, so every row continues after its last token; the prompts come back
        left-padded, as transformers returns them. The defaults are the backbone's ``generation_config``
        (``model.generation_config``, a copy): at step 0 a LadderModel generates what its backbone generates.

        Returns:
            What transformers' ``generate()`` returns: token ids (B * num_return_sequences, T) or a
            ``GenerateOutput`` with ``return_dict_in_generate=True``.
        """
        if isinstance(attention_mask, GenerationConfig):
            attention_mask, generation_config = None, attention_mask
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if self.head not in ("causal_lm", "seq2seq_lm"):
            raise ValueError("generate() needs a seq2seq or causal LM LadderModel")
        if self.head == "causal_lm" and attention_mask is not None and input_ids is not None:
            pad = self.generation_config.pad_token_id
            input_ids, attention_mask = left_align(input_ids, attention_mask, 0 if pad is None else pad)
        return super().generate(
            input_ids, generation_config=generation_config, attention_mask=attention_mask, **kwargs
        )

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        """A :class:`LadderCache` (both networks' caches) where transformers would make one ``DynamicCache``."""
        given = model_kwargs.get(CACHE)
        if given is not None:
            if not isinstance(given, LadderCache):
                raise ValueError(
                    f"a LadderModel generates with a LadderCache (the backbone's and the side network's caches), "
                    f"not a {type(given).__name__}"
                )
            given._is_user_defined = True
            return
        if generation_config.use_cache is False:
            return
        if generation_config.cache_implementation not in (None, "dynamic"):
            raise ValueError(
                f"a LadderModel generates with dynamic caches only, not "
                f"cache_implementation={generation_config.cache_implementation!r}"
            )
        model_kwargs[CACHE] = cache = LadderCache()
        if generation_config.is_assistant:  # an assistant's cache is cropped back to the accepted tokens
            cache.activate_past_recording()


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad: int):
    """Move right-padded rows to left padding (the decoder continues after the LAST column). (B, T) each."""
    if attention_mask.dim() != 2 or not bool((attention_mask[:, -1] == 0).any()):
        return input_ids, attention_mask
    # A stable sort of "is a token" puts each row's padding first and keeps its tokens in order.
    order = attention_mask.to(torch.int8).argsort(dim=1, stable=True)
    mask = attention_mask.gather(1, order)
    return input_ids.gather(1, order).masked_fill(mask == 0, pad), mask
