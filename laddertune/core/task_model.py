"""A bare base model (``BertModel``, ``BartModel``...) plus a new classification head, as LST trains it.

LST never trains the backbone's head: it trains a copy of the head's modules next to the side network
(:class:`~laddertune.core.side_network.SideNetwork`). So a bare base model needs only the family's own
``*ForSequenceClassification`` class around it, to say what the head is and how it pools: the task model is built
on the ``meta`` device (no second backbone is allocated), the given base model is put in its place (held, not
copied; still frozen and unmodified) and only the new head gets real, freshly initialised weights. A bare BART model
then becomes exactly the encoder-only classifier of Table 2, and a checkpoint saved from it names the same
parameters as one saved from ``BartForSequenceClassification``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .self_check import check_backbone


def is_bare(backbone: nn.Module) -> bool:
    """A transformers base model without a task head: the class ``AutoModel`` builds for its config."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(backbone.config)] is type(backbone)
    except (KeyError, AttributeError):  # a config transformers does not map, or a module without one
        return False


def with_task_head(backbone: nn.Module, head: str | None, *, config=None) -> nn.Module:
    """``backbone`` itself when it has a task head; a bare base model inside its family's sequence classifier.

    Args:
        backbone: a transformers model, with or without a task head.
        head: ``LadderConfig.task_head``: ``"sequence_classification"`` gives a bare model a new head.
        config: the classifier's own config (default: the bare model's): several classifiers around one base model
            (a server's tasks) each keep their label count and names in their own copy.

    Raises:
        ConfigError: no transformers model (:func:`~laddertune.core.self_check.check_backbone`), a bare model
            without ``task_head="sequence_classification"``, or a family without a sequence-classification class.
    """
    check_backbone(backbone)  # None, a plain module, meta weights, PEFT adapters: one line before anything
    if not is_bare(backbone):
        return backbone
    name = type(backbone).__name__
    if head != "sequence_classification":
        raise ConfigError(
            f"{name} is a bare base model: pass LadderConfig(task_head='sequence_classification') to give it a new "
            f"classification head (for an LM head load the *ForCausalLM / *ForConditionalGeneration model)"
        )
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        task_class = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(backbone.config)]
    except KeyError:
        raise ConfigError(f"{name} has no sequence-classification class in transformers") from None
    with torch.device("meta"):  # the head's shapes only: the base model built here is replaced at once
        task = task_class(backbone.config if config is None else config)
    prefix = task.base_model_prefix
    setattr(task, prefix, backbone)
    weight = next(backbone.parameters())
    for child_name, child in task.named_children():
        if child_name != prefix:
            child.to_empty(device=weight.device)
            child.apply(task._init_weights)  # the family's own initialisation of a new head
    return task.train(backbone.training)
