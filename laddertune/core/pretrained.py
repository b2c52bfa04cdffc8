"""What makes a :class:`~laddertune.core.LadderModel` a ``transformers.PreTrainedModel`` without owning a backbone.

A ``PreTrainedModel`` is what the Hugging Face ecosystem accepts (``Trainer``, pipelines, TRL, accelerate); PEFT's
``PeftModel`` is the model of a wrapper they all take. A LadderModel is one by inheritance, with three differences,
each because the backbone is held, frozen and unmodified, and never saved:

* ``config`` is the backbone's own config (a view of it, :mod:`.config_view`), and ``PreTrainedModel.__init__`` is
  not run: it would rewrite that config's attention implementation for the LadderModel class and initialise
  weights. :meth:`PretrainedLadder._init_pretrained` sets the few attributes it would have set.
* ``save_pretrained`` writes the side network only (:mod:`.side_checkpoint`), in the folder layout
  ``transformers.Trainer`` reads back: any Trainer (or subclass, TRL's included) saves side-only checkpoints through
  it and resumes from them, since its loader reads the files that ``model.safetensors.index.json`` names with
  ``load_state_dict(strict=False)``; the side-relative keys of ``ladder_model.safetensors`` load into the side
  network by :func:`_side_keys`, and the backbone's keys, absent by design, are ``_keys_to_ignore_on_save``.
* ``from_pretrained(backbone, directory)`` / ``from_pretrained(directory, **backbone_kwargs)``, as PEFT's.

``device`` and ``dtype`` are the side network's (where outputs and the loss are); a causal LadderModel's
``base_model`` is a :class:`LadderBody`, the model without its LM head, as transformers names it.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from transformers import GenerationConfig
from transformers.modeling_outputs import BaseModelOutputWithPast

from .ablations import strip_backbone
from .cache import LadderCache
from .cache_names import CACHE, pop_cache
from .config_view import BackboneConfigView
from .discovery import task_head
from .quantization import convert_backbone
from .side_checkpoint import (
    GENERATION_CONFIG_NAME,
    check_head,
    load_recorded_backbone,
    load_side_weights,
    read_side_config,
    restore_labels,
    save_side,
)
from .tap_projection import match_backbone_dtype
from .task_model import with_task_head


class _PipelineModelCheck(logging.Filter):
    """Drops transformers' pipeline notice that a ``LadderModel*`` class "is not supported" for a task.

    Pipelines compare the model's class name with their lists of task classes (PEFT's classes are listed there) and
    log an error line, hundreds of class names long, for any other class, then run it all the same. A LadderModel
    runs in the text-generation and text-classification pipelines (tests/test_hf_ecosystem.py), so the line says
    nothing true about it; notices about other classes pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The model 'LadderModel")


logging.getLogger("transformers.pipelines.base").addFilter(_PipelineModelCheck())


def _side_keys(module, state_dict: dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: keys relative to the side network (``ladder_model.safetensors``'s) load into it.

    A LadderModel's own keys start with ``side.`` or ``backbone.``; any other key under ``prefix`` is read as the
    side network's (``stacks.body.trunk...`` becomes ``side.stacks.body.trunk...``).
    """
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if not rest.startswith(("side.", "backbone.")):
            state_dict[f"{prefix}side.{rest}"] = state_dict.pop(key)


class PretrainedLadder:
    """Mixed into LadderModel (before ``PreTrainedModel``): its config, side-only saving and loading."""

    supports_gradient_checkpointing = True  # LST's side checkpointing (activation_checkpointing.py)
    # forward computes its loss as a mean over the batch (no num_items_in_batch): Trainer then scales it for gradient
    # accumulation itself, as for any model whose forward takes no loss keyword arguments
    accepts_loss_kwargs = False

    def _init_pretrained(self, backbone) -> None:
        """Set what ``PreTrainedModel.__init__`` and ``post_init`` would, without touching ``backbone``."""
        self.name_or_path = getattr(backbone.config, "name_or_path", "")
        self.kernel_config = None
        self.loss_type = getattr(backbone, "loss_type", None)  # the backbone head's loss (its forward's)
        self.all_tied_weights_keys = {}  # the side network ties nothing; the backbone was tied when it was loaded
        if self.can_generate():
            # A copy: a LadderModel's generation defaults are its backbone's (then it generates what the backbone
            # generates at step 0), and changing them leaves the backbone's alone.
            own = getattr(backbone, "generation_config", None)
            self.generation_config = (
                copy.deepcopy(own) if own is not None else GenerationConfig.from_model_config(backbone.config)
            )
        self.register_load_state_dict_pre_hook(_side_keys)

    @property
    def config(self):
        """The backbone's ``PretrainedConfig``, as PEFT keeps it; the LadderConfig is ``ladder_config`` (reading its
        fields through ``.config`` still works, with a ``FutureWarning``: :mod:`laddertune.core.config_view`)."""
        return BackboneConfigView(self.backbone.config, self.ladder_config)

    @property
    def device(self) -> torch.device:
        """The device of the side network's parameters (where outputs and the loss are)."""
        return next(self.side.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the side network's parameters."""
        return next(self.side.parameters()).dtype

    @property
    def backbone_dtype(self) -> torch.dtype:
        """The dtype of the frozen backbone's floating-point weights (may differ from the side's :attr:`dtype`)."""
        return next(p.dtype for p in self.backbone.parameters() if p.is_floating_point())

    def trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts; 'all' is the backbone's plus the side network's."""
        trainable = sum(p.numel() for p in self.side.parameters())
        return trainable, trainable + sum(p.numel() for p in self.backbone.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )

    @property
    def _keys_to_ignore_on_save(self) -> set[str]:
        """Every backbone key: never saved (``Trainer`` then reads their absence on resume as expected)."""
        return {f"backbone.{k}" for k in self.backbone.state_dict()}

    def tie_weights(self, *args, **kwargs) -> None:
        """Nothing to tie: the side network shares no weight, and the backbone's ties are its own."""

    def get_input_embeddings(self):
        """The backbone's input embeddings (frozen)."""
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self):
        """The backbone's LM head (frozen), or None."""
        return self.backbone.get_output_embeddings()

    def save_pretrained(
        self, save_directory, *, is_main_process: bool = True, state_dict: dict | None = None, **kwargs
    ) -> None:
        """Write only the side network: ``ladder_model.safetensors``, ``ladder_config.json``, transformers' index
        (``model.safetensors.index.json``) and, for LM heads, ``generation_config.json``.

        Args:
            save_directory: the folder (created).
            is_main_process: False writes nothing (the other ranks of a data-parallel job, as transformers).
            state_dict: a full LadderModel state dict to take the ``side.*`` tensors from (what ``Trainer`` passes
                under FSDP or DeepSpeed); default the side network's own.
            **kwargs: transformers' other saving options (``safe_serialization``, ``max_shard_size``...): the side
                network is always one safetensors file.
        """
        if not is_main_process:
            return
        if kwargs.get("push_to_hub"):
            raise ValueError(
                "save the folder, then push it with huggingface_hub: a LadderModel does not upload"
            )
        side = None
        if state_dict is not None:
            side = {k[len("side.") :]: v for k, v in state_dict.items() if k.startswith("side.")}
        save_side(self, save_directory, side)

    @classmethod
    def from_pretrained(cls, backbone, directory=None, **backbone_kwargs):
        """``from_pretrained(backbone, directory)``: the saved side network next to a backbone you loaded;
        ``from_pretrained(directory, **backbone_kwargs)``: next to the backbone it recorded (alias, hub id or folder,
        with its task head and number of labels), loaded here, as PEFT's ``AutoPeftModel...`` classes do.

        Raises:
            CheckpointError: missing/corrupt files, another backbone, or another head or label count (one line).
        """
        if directory is None:
            directory = backbone
            config = read_side_config(directory)
            backbone = load_recorded_backbone(directory, config, **backbone_kwargs)
        else:
            config = read_side_config(directory)
        backbone = with_task_head(backbone, config.task_head)
        check_head(backbone, task_head(backbone), directory, config)
        model = cls(backbone, config)  # no pruning or Fisher pass: the weights come from the file
        if config.backbone_dtype is not None:  # the dtype it trained in; any dtype passes the fingerprint
            convert_backbone(model.backbone, config.backbone_dtype, config.quantize_embeddings)
            match_backbone_dtype(model)  # the saved basis loads into the tap dtype's buffer
        load_side_weights(model, directory, config)
        if not config.variant.runs_backbone:
            strip_backbone(model)
        restore_labels(backbone, config)
        if model.can_generate() and (Path(directory) / GENERATION_CONFIG_NAME).is_file():
            model.generation_config = GenerationConfig.from_pretrained(directory)
        return model


class LadderBody:
    """A causal LadderModel without its LM head: both networks, returning the LM head's input.

    ``last_hidden_state`` is ``Up(side) + backbone final state`` (:meth:`LadderModel.lm_head_input`; with re-entry
    the re-run top layers' normed output, :func:`~laddertune.core.reentry.reentered`), so a caller
    that applies the LM head itself (TRL's fused LM-head loss reads ``model.base_model(...).last_hidden_state`` and
    ``model.get_output_embeddings()``) computes the LadderModel's own logits. Not a module: it holds the model.
    """

    def __init__(self, model) -> None:
        self.model = model

    def __call__(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        cache: LadderCache | None = None,
        past_key_values: LadderCache | None = None,
        use_cache: bool = False,
        taps: dict | None = None,
    ) -> BaseModelOutputWithPast:
        """Run both halves on (B, T) ``input_ids``; returns the LM head's input (B, T, d) and the cache."""
        model = self.model
        given = pop_cache({"cache": cache, "past_key_values": past_key_values})
        cache = given if given is not None else LadderCache() if use_cache else None
        stack, backbone_out, stack_taps, side_out, calls = model._stack(
            input_ids, attention_mask, None, position_ids, cache, taps
        )
        hidden, final, head_input = model._causal_head(
            stack, side_out.last_hidden_state, backbone_out, stack_taps, calls, cache
        )
        hidden = head_input(hidden, final)  # (B, T, d)
        return BaseModelOutputWithPast(last_hidden_state=hidden, **{CACHE: cache})

    forward = __call__
