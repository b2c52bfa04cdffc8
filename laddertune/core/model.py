"""`LadderModel`: an unmodified, frozen Hugging Face backbone next to a trainable ladder side network.

Composition, not a fork: the backbone runs as its library wrote it, under ``torch.no_grad()``; temporary forward
hooks record the hidden states the side network reads (:func:`record_taps`). No gradient ever enters the backbone,
so training memory is the side network's, plus the frozen weights and the ladder inputs (Sung et al. 2022, §3).

A LadderModel is a ``transformers.PreTrainedModel`` (:mod:`.pretrained`: side-only saving and loading), and its LM
heads (:class:`LadderModelForCausalLM`, :class:`LadderModelForSeq2SeqLM`) are ``GenerationMixin`` models whose
``generate()`` is transformers' own over both networks (:mod:`.generation`, :mod:`.cache`). ``LadderModel(backbone,
config)`` builds the class of the backbone's head, as PEFT's ``get_peft_model`` builds ``PeftModelForCausalLM``.
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.loss.loss_utils import ForCausalLMLoss, ForSequenceClassificationLoss
from transformers.modeling_outputs import (
    CausalLMOutputWithPast,
    Seq2SeqLMOutput,
    SequenceClassifierOutput,
)

from ..errors import ConfigError
from ..pruning import initialize_from_backbone
from .ablations import make_pruned
from .activation_checkpointing import ActivationCheckpointing
from .architectures import get_path, layer_modules
from .cache import LadderCache
from .cache_names import CACHE, output_cache, pop_cache
from .chunked_loss import chunked_lm_loss
from .config import TAP_PROJECTION_HEADS, LadderConfig
from .discovery import apply_lm_head_extras, discover_family, task_head
from .generation import LadderEncoder, LadderEncoderOutput, LadderGenerationMixin, encoder_states
from .pooling import backbone_final, pool
from .pretrained import LadderBody, PretrainedLadder
from .quantization import convert_backbone
from .reentry import check_reentry, recording, reentered
from .self_check import check_backbone, self_check
from .side_network import SideNetwork, as_output, record_taps
from .tap_projection import FINAL, fit_pca, match_backbone_dtype
from .task_model import is_bare, with_task_head

logger = logging.getLogger(__name__)


class LadderModel(ActivationCheckpointing, PretrainedLadder, PreTrainedModel):
    """A frozen backbone and its ladder side network. Build it with :func:`get_ladder_model`.

    Calling it takes the backbone's own keyword arguments and returns the backbone's kind of output
    (``.loss`` when ``labels`` are given, ``.logits``). ``LadderModel(backbone, config)`` is an instance of the
    backbone head's class: :class:`LadderModelForCausalLM`, :class:`LadderModelForSeq2SeqLM`, or LadderModel itself
    for a classifier.
    """

    def __new__(cls, *args, **kwargs):
        # copies and unpickling call __new__ without arguments: they keep their class
        if cls is LadderModel and args:
            backbone, config = args[0], args[1] if len(args) > 1 else kwargs["config"]
            check_backbone(backbone)  # None, a plain module, PEFT: one line before its head is looked up
            head = config.task_head if is_bare(backbone) else task_head(backbone)
            cls = _HEAD_CLASSES.get(head, LadderModel)
        return super().__new__(cls)

    def __init__(self, backbone: nn.Module, config: LadderConfig) -> None:
        # nn.Module's __init__, not PreTrainedModel's: that would rewrite the backbone's config (the attention
        # implementation, for this class) and initialise weights; _init_pretrained sets what it would have set.
        nn.Module.__init__(self)
        backbone = with_task_head(backbone, config.task_head)  # a bare base model gets a new head
        head = task_head(backbone)
        if self.can_generate() != (head in ("causal_lm", "seq2seq_lm")):
            raise ConfigError(f"{type(self).__name__} cannot hold a backbone with a {head} head")
        self.family = discover_family(backbone, head)
        if head == "sequence_classification" and not self.family.cls_head:
            raise ConfigError(f"{self.family.name} backbones are supported for LM heads only")
        depth = max(len(layer_modules(backbone, spec)) for spec in self.family.stacks)
        config.resolve_for_head(head, getattr(backbone.config, "vocab_size", None), depth)
        check_reentry(config, self.family)
        self.ladder_config = config
        self.backbone = backbone.requires_grad_(False)
        self.side = SideNetwork(backbone, self.family, config, head)
        self._init_pretrained(backbone)
        self.train(True)

    # -- modes and bookkeeping ---------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> LadderModel:
        """Set train/eval mode; the backbone trains (dropout on) only with ``backbone_dropout=True``."""
        super().train(mode)
        self.backbone.train(mode and self.ladder_config.backbone_dropout)
        return self

    @property
    def head(self) -> str:
        return self.ladder_config.task_head

    # -- the two halves of the forward: the backbone's taps, then the side network on them ------------------------
    def backbone_layers(self, stack: str) -> nn.ModuleList:
        """Backbone stack ``stack``'s layers in the order they run (a shared ALBERT group once per application)."""
        return layer_modules(self.backbone, self.side.stacks[stack].spec)

    def run_backbone(
        self, stack: str, input_ids, *, layers=None, keep_output: bool = True, raw: bool = False, **kwargs
    ):
        """The backbone half of one stack: run it without autograd and record the taps its side stack reads.

        Args:
            stack: ``"body"``, or ``"encoder"`` / ``"decoder"`` of an encoder-decoder.
            input_ids: (B, T) the stack's token ids.
            layers: backbone layer ids to record (default: what the side stack reads, ``tap_layers``).
            keep_output: False when only the taps are needed: the backbone then stops after the last recorded
                layer (at layer 0 when only the embedding output is wanted) and the output is None. True: the
                output holds the final state, so no full-width ``FINAL`` tap is recorded.
            raw: record the taps at full width, without the side's tap projection (to fit it).
            **kwargs: the stack's own keyword arguments (masks, positions, cache...); None values are dropped.

        Returns:
            (the backbone stack's output or None, ``{EMBED: (B, T, d), i: (B, T, d)}`` on the side's device).
        """
        side_stack = self.side.stacks[stack]
        layers = side_stack.tap_layers if layers is None else layers
        if keep_output:
            layers = [i for i in layers if i != FINAL]
        call = get_path(self.backbone, side_stack.spec.call)
        output = None
        project = None if raw else side_stack.projection
        record = record_taps(
            self.backbone_layers(stack), layers, stop_when_complete=not keep_output, project=project
        )
        with torch.no_grad(), record as taps:
            output = as_output(call(input_ids=input_ids, **_present(kwargs)))
        # A backbone placed over several devices (laddertune.core.placement) leaves each tap where its layer ran.
        device = self.device
        return output, {k: v.to(device) for k, v in taps.items()}

    def run_side(self, stack: str, taps: dict, **kwargs):
        """The side half of one stack: side stack ``stack`` on ``taps``; tensors in ``kwargs`` are moved to the
        side network's device. Returns the trunk's output (``last_hidden_state`` and its cache)."""
        device = self.device
        kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in _present(kwargs).items()}
        return self.side.stacks[stack](taps, **kwargs)

    @torch.no_grad()
    def backbone_taps(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        layers: dict[str, list[int]] | None = None,
        raw: bool = False,
    ) -> dict[str, dict[int, torch.Tensor]]:
        """The backbone half of the forward: every backbone stack's taps of this batch, without autograd.

        ``model(**batch)`` equals ``model.side_forward(**batch, taps=model.backbone_taps(**batch))``. With backbone
        dropout off the taps are a deterministic function of the batch: a tap cache stores them once, and several
        side networks share one backbone pass (:class:`~laddertune.core.multi_side.MultiSideModel`).

        Args:
            input_ids ... decoder_attention_mask: the batch, as for :meth:`forward`.
            layers: backbone layer ids to record per stack (default: what the side network reads); a superset
                lets a tap cache serve runs that keep other layers.
            raw: the taps at full width, without the side's tap projection.

        Returns:
            ``{stack name: {EMBED: (B, T, d), layer id: (B, T, d)}}``; an encoder-decoder's ``encoder`` and
            ``decoder`` (the decoder's taps follow from the labels by teacher forcing).
        """
        layers = layers or {}
        if "body" in self.side.stacks or self.head == "sequence_classification":
            stack = next(iter(self.side.stacks))  # "body", or BART's encoder for its classifier
            _, taps = self.run_backbone(
                stack,
                input_ids,
                layers=layers.get(stack),
                keep_output=False,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
                use_cache=False,
                raw=raw,
            )
            return {stack: taps}
        encoder, enc_taps = self.run_backbone(
            "encoder", input_ids, layers=layers.get("encoder"), attention_mask=attention_mask, raw=raw
        )
        if decoder_input_ids is None:
            decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
        _, dec_taps = self.run_backbone(
            "decoder",
            decoder_input_ids,
            layers=layers.get("decoder"),
            keep_output=False,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder.last_hidden_state,  # (B, T, d)
            encoder_attention_mask=attention_mask,
            use_cache=False,
            raw=raw,
        )
        return {"encoder": enc_taps, "decoder": dec_taps}

    def side_forward(
        self, input_ids: torch.Tensor, attention_mask=None, labels=None, *, taps: dict, **kwargs
    ):
        """The side half of the forward: the side network on the backbone's ``taps`` (from :meth:`backbone_taps`
        or a tap cache); the backbone does not run. Takes :meth:`forward`'s other arguments."""
        return self(input_ids, attention_mask, labels, taps=taps, **kwargs)

    def lm_logits(self, hidden: torch.Tensor, final: torch.Tensor | None = None) -> torch.Tensor:
        """LM heads: vocabulary logits (float32, on the side's device) of side hidden states ``hidden`` (B, T, d/r).

        The up-projection, plus the backbone's own final hidden states ``final`` (B, T, d) with the final shortcut
        (the up-projection starts at zero, so at step 0 these are the backbone's logits exactly), then the
        backbone's frozen LM head as its model applies it: T5 v1.0's rescale before it, and after it what
        :func:`~laddertune.core.discovery.apply_lm_head_extras` finds (BART's ``final_logits_bias``, Gemma's soft
        cap, Cohere's logit scale).
        """
        return self.head_logits(self.lm_head_input(hidden, final))

    def head_logits(self, head_input: torch.Tensor, module_hooks: bool = True) -> torch.Tensor:
        """The backbone's frozen LM head and its extras (see :meth:`lm_logits`) on ``head_input`` (..., d): float32
        logits on the side's device. ``module_hooks=False`` calls the head's ``forward`` itself (accelerate's
        offloading, which wraps ``forward``, still applies): the chunked loss differentiates it inside the forward
        pass, where hooks that wait for gradients (torch's module trackers) would take that for the backward pass."""
        head = self.backbone.get_output_embeddings()
        logits = head(head_input) if module_hooks else head.forward(head_input)
        return apply_lm_head_extras(self.backbone, logits).float().to(self.device)

    def lm_head_input(self, hidden: torch.Tensor, final: torch.Tensor | None = None) -> torch.Tensor:
        """What the backbone's LM head reads (B, T, d), in its dtype and on its device: ``Up(hidden) + final``, with
        T5 v1.0's rescale (see :meth:`lm_logits`)."""
        hidden = self.side.with_final(self.side.up(hidden), final)  # (B, T, d)
        if getattr(self.backbone.config, "scale_decoder_outputs", False):  # T5 v1.0's tied-embedding rescale
            hidden = hidden * getattr(self.backbone.config, self.family.width) ** -0.5
        return self._as_head_input(hidden)

    def _as_head_input(self, hidden: torch.Tensor, final: None = None) -> torch.Tensor:
        """``hidden`` (..., d) in the LM head's dtype and on its device (``final``: :meth:`lm_head_input`'s
        signature, always None here)."""
        head = self.backbone.get_output_embeddings()
        weight = head.weight
        # a quantized head (quantize_embeddings) computes in its compute dtype, not its storage's
        dtype = weight.dtype if weight.is_floating_point() else getattr(head, "compute_dtype", torch.bfloat16)
        # on "meta" when offloaded: accelerate's hook then moves the input itself
        return hidden.to(dtype) if weight.device.type == "meta" else hidden.to(weight.device, dtype)

    def _causal_head(self, stack: str, hidden, backbone_out, taps, calls, cache):
        """A causal LM head's parts: (the states the head input is made of, the backbone's final states or None,
        the function of the two that gives the head's input): with re-entry the re-run top layers' output as it
        is, else the side output and the final shortcut through :meth:`lm_head_input`."""
        if calls is not None:  # every caller applies the returned head input to the states
            return reentered(self, stack, hidden, calls, cache), None, self._as_head_input
        return hidden, self._final(stack, backbone_out, taps), self.lm_head_input

    def _final(self, stack: str, backbone_out, taps) -> torch.Tensor | None:
        """With the final shortcut, backbone stack ``stack``'s final hidden states (B, T, d), else None."""
        if not self.ladder_config.final_shortcut:
            return None
        return backbone_final(self, stack, backbone_out, taps).to(self.device)

    def _frozen_head(self):
        """The frozen LM head as the chunked loss calls it (inside the forward pass: no module hooks)."""
        return functools.partial(self.head_logits, module_hooks=False)

    def _chunked(self, labels) -> bool:
        """The chunked LM loss applies: labels given, gradients wanted, a chunk size set, not 0 (then no logits)."""
        return labels is not None and torch.is_grad_enabled() and bool(self.ladder_config.loss_chunk_size)

    # -- forward ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: LadderEncoderOutput | tuple | None = None,
        cache: LadderCache | None = None,
        past_key_values: LadderCache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        taps: dict[str, dict[int, torch.Tensor]] | None = None,
        **kwargs,
    ):
        """Compute logits (and the loss when ``labels`` are given) as the backbone's head would.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T) 1 for tokens, 0 for padding.
            labels: class ids / regression targets (classification), target ids with -100 ignored (LM heads).
            token_type_ids: BERT-style segment ids.
            position_ids: positions for decoder-only backbones (left-padded generation).
            decoder_input_ids: T5 decoder input; derived from ``labels`` when absent.
            decoder_attention_mask: T5 decoder padding mask.
            encoder_outputs: both encoders' states already computed (generation): a :class:`LadderEncoderOutput`
                or :meth:`encode`'s ``(backbone states, side states)``.
            cache: a :class:`LadderCache` for incremental decoding.
            past_key_values: the same, under the name transformers used up to 5.23 (:mod:`.cache_names`).
            use_cache: return a :class:`LadderCache` in the output's ``cache`` (``past_key_values`` up to 5.23).
            logits_to_keep: LM heads: compute the logits of the last ``logits_to_keep`` positions only (0: all), as
                transformers' LMs do (generation asks for the last one).
            return_dict: False returns a tuple (``ModelOutput.to_tuple()``), as transformers models do.
            output_hidden_states, output_attentions: refused when true: a LadderModel's states are two networks'
                (backbone and side), which transformers' single-network output fields cannot hold.
            taps: the backbone's taps of this batch per stack (``{"body": {EMBED: (B, T, d), i: (B, T, d)}}``,
                from :func:`laddertune.core.taps.collect_taps`, or from a tap cache as
                :class:`~laddertune.core.packed_tap.PackedTap` objects): the side network runs on them and the
                backbone does not run. Not with ``use_cache``.
            **kwargs: what transformers' ``generate()`` passes on to every model's forward without using it
                (``tokenizer``, given for ``stop_strings``); anything else is a ``TypeError``.

        Raises:
            ValueError: ``output_hidden_states`` or ``output_attentions`` asked for, ``taps`` with ``use_cache``,
                or both ``cache`` and ``past_key_values``.
        """
        kwargs.pop("tokenizer", None)
        given = pop_cache({"cache": cache, "past_key_values": past_key_values})
        if kwargs:
            raise TypeError(
                f"LadderModel.forward() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}"
            )
        if taps is not None and use_cache:
            raise ValueError("taps replace the backbone's forward; incremental decoding needs the backbone")
        for name, value in (
            ("output_hidden_states", output_hidden_states),
            ("output_attentions", output_attentions),
        ):
            if value:
                raise ValueError(
                    f"LadderModel.forward does not support {name}=True: run model.backbone for the backbone's"
                )
        cache = given if given is not None else LadderCache() if use_cache else None
        if self.head == "seq2seq_lm":
            if encoder_outputs is None:
                encoder_outputs = self.encode(input_ids, attention_mask, taps and taps["encoder"])
            backbone_enc, side_enc, side_mask = encoder_states(encoder_outputs)
            out = self.decode(
                (backbone_enc, side_enc),
                attention_mask,
                labels,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
                cache=cache,
                taps=taps and taps["decoder"],
                side_encoder_attention_mask=side_mask,
                logits_to_keep=logits_to_keep,
            )
        else:
            out = self._body(
                input_ids, attention_mask, labels, token_type_ids, position_ids, cache, taps, logits_to_keep
            )
        return out if return_dict is None or return_dict else out.to_tuple()

    def _stack(self, input_ids, attention_mask, token_type_ids, position_ids, cache, taps):
        """Both halves of a one-stack model (decoder-only LMs, encoder classifiers, BART's encoder for its
        classifier): (stack name, the backbone's output or None, its taps, the side's output, the re-entry
        layers' recorded calls or None)."""
        stack = next(
            iter(self.side.stacks)
        )  # "body", or "encoder" for an encoder-decoder's classifier (BART)
        side_kwargs = {"attention_mask": attention_mask, "position_ids": position_ids}
        backbone_kwargs = {**side_kwargs, "token_type_ids": token_type_ids}
        if stack == "body":
            _with_cache(cache, backbone_kwargs, side_kwargs)
        backbone_out = calls = None
        reentry = self.ladder_config.reentry_layers
        if taps is None:
            # The backbone's own output is needed for its cache and the final shortcut; otherwise it stops after
            # the last layer the side network reads (the pruned side network: right after its embeddings).
            keep = cache is not None or bool(self.ladder_config.final_shortcut)
            with recording(self, stack) as calls:
                backbone_out, stack_taps = self.run_backbone(
                    stack, input_ids, keep_output=keep, **backbone_kwargs
                )
        elif reentry:
            raise ValueError(
                "reentry_layers runs the backbone's top layers again: it needs the backbone, not taps"
            )
        else:
            stack_taps = taps[stack]
        side_out = self.run_side(stack, stack_taps, **side_kwargs)
        if cache is not None:
            cache.fill(output_cache(backbone_out), output_cache(side_out))
        return stack, backbone_out, stack_taps, side_out, calls

    def _body(
        self, input_ids, attention_mask, labels, token_type_ids, position_ids, cache, taps, logits_to_keep=0
    ):
        """A one-stack model's forward: both halves, the head and the loss."""
        stack, backbone_out, stack_taps, side_out, calls = self._stack(
            input_ids, attention_mask, token_type_ids, position_ids, cache, taps
        )
        hidden = side_out.last_hidden_state  # (B, T, d/r)
        if self.head == "causal_lm":
            hidden, final, head_input = self._causal_head(
                stack, hidden, backbone_out, stack_taps, calls, cache
            )
            if self._chunked(labels):
                size = self.ladder_config.loss_chunk_size
                loss = chunked_lm_loss(hidden, labels, head_input, self._frozen_head(), size, True, final)
                return CausalLMOutputWithPast(loss=loss, logits=None, **{CACHE: cache})
            logits = self.head_logits(head_input(*_last(logits_to_keep, hidden, final)))
            loss = None
            if labels is not None:
                loss = ForCausalLMLoss(logits, labels, vocab_size=logits.shape[-1])
            return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE: cache})
        # Pool before up-projecting (it is per-token linear): one (B, d) activation instead of (B, T, d).
        pooled = functools.partial(
            pool, self.family.cls_pool, input_ids=input_ids, attention_mask=attention_mask,
            eos_token_id=self.backbone.config.eos_token_id,
        )  # fmt: skip
        hidden = self.side.up(pooled(hidden))  # (B, d), or (B, T, d) for heads that pool by themselves
        final = self._final(stack, backbone_out, stack_taps)
        # the backbone's own final state, the side's output added on top (or mixed in: final_gate)
        hidden = self.side.with_final(hidden, None if final is None else pooled(final))
        logits = self.side.head(hidden)
        loss = None if labels is None else ForSequenceClassificationLoss(labels, logits, self.backbone.config)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, taps=None):
        """Encoder-decoders: run both encoders; returns (backbone states, side states), each (B, T, width). With
        the encoder's ``taps`` only the side encoder runs and the backbone states are None."""
        backbone_out = None
        if taps is None:
            backbone_out, taps = self.run_backbone("encoder", input_ids, attention_mask=attention_mask)
        side_out = self.run_side("encoder", taps, attention_mask=attention_mask)
        return None if backbone_out is None else backbone_out.last_hidden_state, side_out.last_hidden_state

    def decode(
        self,
        encoder_outputs: tuple,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        *,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        cache: LadderCache | None = None,
        taps: dict | None = None,
        side_encoder_attention_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> Seq2SeqLMOutput:
        """Encoder-decoders: both decoders on :meth:`encode`'s ``(backbone states, side states)``, the LM head and
        the loss.

        Args:
            encoder_outputs: (backbone encoder states (B, S, d) or None with ``taps``, side states (B, S', d/r)).
            attention_mask: (B, S) the source's padding mask (the backbone decoder's cross-attention mask).
            labels: (B, T) target ids, -100 ignored; the decoder input is derived from them when not given.
            side_encoder_attention_mask: the side decoder's cross-attention mask when its encoder states are longer
                than the source (the vision-and-language side encoder adds image positions); default
                ``attention_mask``.
            cache: a :class:`LadderCache` for incremental decoding; taps: the decoder's taps (no backbone run).
            logits_to_keep: the logits of the last ``logits_to_keep`` positions only (0: all).
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("a seq2seq LadderModel needs labels or decoder_input_ids")
            decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
        backbone_enc, side_enc = encoder_outputs[:2]
        side_kwargs = {
            "attention_mask": decoder_attention_mask,
            "encoder_hidden_states": side_enc,
            "encoder_attention_mask": attention_mask
            if side_encoder_attention_mask is None
            else side_encoder_attention_mask,
        }
        backbone_kwargs = {
            "attention_mask": decoder_attention_mask,
            "encoder_hidden_states": backbone_enc,
            "encoder_attention_mask": attention_mask,
        }
        _with_cache(cache, backbone_kwargs, side_kwargs)
        backbone_out = None
        if taps is None:
            keep = cache is not None or bool(self.ladder_config.final_shortcut)
            backbone_out, taps = self.run_backbone(
                "decoder", decoder_input_ids, keep_output=keep, **backbone_kwargs
            )
        side_out = self.run_side("decoder", taps, **side_kwargs)
        if cache is not None:
            cache.fill(output_cache(backbone_out), output_cache(side_out))
        final = self._final("decoder", backbone_out, taps)
        if self._chunked(labels):
            hidden, size = side_out.last_hidden_state, self.ladder_config.loss_chunk_size
            loss = chunked_lm_loss(
                hidden, labels, self.lm_head_input, self._frozen_head(), size, False, final
            )
            return Seq2SeqLMOutput(loss=loss, logits=None, **{CACHE: cache})
        logits = self.lm_logits(
            *_last(logits_to_keep, side_out.last_hidden_state, final)
        )  # (B, T_dec, vocab)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return Seq2SeqLMOutput(loss=loss, logits=logits, **{CACHE: cache})


class LadderModelForCausalLM(LadderModel, LadderGenerationMixin):
    """A LadderModel on a decoder-only LM (``*ForCausalLM``): transformers' ``generate()`` over both networks."""

    @property
    def base_model(self) -> LadderBody:
        """The model without its LM head, as transformers names it: what the head reads (:class:`LadderBody`)."""
        return LadderBody(self)


class LadderModelForSeq2SeqLM(LadderModel, LadderGenerationMixin):
    """A LadderModel on an encoder-decoder LM (T5, BART): transformers' ``generate()`` over both networks."""

    def get_encoder(self, modality: str | None = None):
        """The encoder as ``generate()`` calls it: both encoders, one ``LadderEncoderOutput``."""
        return LadderEncoder(self) if modality is None else super().get_encoder(modality)


_HEAD_CLASSES = {"causal_lm": LadderModelForCausalLM, "seq2seq_lm": LadderModelForSeq2SeqLM}


def _present(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


def _last(count: int, *states):
    """The last ``count`` positions of each (B, T, ...) state (None stays None); ``count=0``: all of them."""
    return states if not count else tuple(None if h is None else h[:, -count:] for h in states)


def _with_cache(cache: LadderCache | None, backbone_kwargs: dict, side_kwargs: dict) -> None:
    """Ask both stacks for their caches, or explicitly for none: transformers' decoders (T5's, Llama's) build a
    key/value cache by default, which in training would stay alive through the side network's forward, at LST's
    peak (0.9 GiB on T5-base at batch 100, 9 GiB on T5-3B; see benchmarks/results/table1_memory.md)."""
    if cache is None:
        backbone_kwargs["use_cache"] = side_kwargs["use_cache"] = False
    else:
        backbone_kwargs.update({CACHE: cache.backbone, "use_cache": True})
        side_kwargs.update({CACHE: cache.side, "use_cache": True})


def get_ladder_model(
    backbone: nn.Module,
    config: LadderConfig | None = None,
    calibration_data=None,
    *,
    fit_projection: bool = True,
) -> LadderModel:
    """Put a ladder side network next to ``backbone`` (PEFT's ``get_peft_model``, for LST).

    Args:
        backbone: a task model (T5ForConditionalGeneration, *ForCausalLM, *ForSequenceClassification) or a bare
            base model with ``config.task_head="sequence_classification"``; frozen, not copied.
        config: the side network's configuration (defaults: r=8, a side layer on every backbone layer or on every
            other one of a stack of 24 or more, random init).
        calibration_data: an iterable of training batches, needed for ``init="fisher"`` and
            ``tap_projection="pca"`` (Fisher reads the first batches, the PCA the next ones); with it an LM head's
            unset ``tap_projection`` is ``pca``, without it ``none`` (a classifier's: ``none``).
        fit_projection: False leaves a ``pca`` projection unfitted (zeros), for a model whose weights come from
            elsewhere (the memory predictor's trace); an LM head's unset ``tap_projection`` is then ``pca``, as a
            training run's.

    Raises:
        ConfigError: unsupported backbone, architecture or head, a config that does not fit it (core/self_check.py).
    """
    config = copy.deepcopy(config) if config is not None else LadderConfig()
    if config.init == "fisher" and calibration_data is None:
        raise ConfigError("init='fisher' needs calibration_data: an iterable of training batches")
    if config.tap_projection == "pca" and calibration_data is None and fit_projection:
        raise ConfigError("tap_projection='pca' needs calibration_data: an iterable of training batches")
    # what is no backbone (no config) is refused by LadderModel below, in one line
    known = hasattr(backbone, "config") and not is_bare(backbone)
    head = task_head(backbone) if known else config.task_head
    if config.tap_projection is None and config.variant.ladders and head in TAP_PROJECTION_HEADS:
        # pca where it can be fitted (measured on the instruction sample: validation loss 1.772 against 1.790 at
        # full width, benchmarks/results/lst_lm_settings.md); without calibration data the full-width taps: a
        # random projection costs a classifier 3.8 SST-2 points and is not measured on LM heads
        config.tap_projection = "pca" if calibration_data is not None or not fit_projection else "none"
    model = LadderModel(backbone, config)
    if config.init != "random":
        initialize_from_backbone(model, calibration_data)
    if config.tap_projection == "pca" and fit_projection:  # Fisher read its batches first: PCA the next ones
        fit_pca(model, calibration_data, config.projection_tokens)
    if not config.variant.runs_backbone:  # from here on the side network runs alone
        make_pruned(model)
    if config.backbone_dtype is not None:  # after the pruned init, which reads full-precision weights
        convert_backbone(model.backbone, config.backbone_dtype, config.quantize_embeddings)
        match_backbone_dtype(model)
    self_check(model)  # a 2-token forward and backward: a family discovery cannot serve fails here
    return model
