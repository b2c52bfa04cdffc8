"""Checks that make a backbone LST cannot serve fail when the model is built, in one line, not later.

:func:`check_backbone` refuses what is no backbone at all before anything is built: None, a plain ``nn.Module``
(``nn.Linear``, a single layer), weights on the ``meta`` device that were never loaded (outside a deliberate
``with torch.device("meta")``), a PEFT-wrapped model.
:func:`self_check` runs the built :class:`~laddertune.core.model.LadderModel` once, forward and backward, on a
2-token batch: discovery (:mod:`laddertune.core.discovery`) reads a family's conventions from its modules, and a
family that breaks them (layers returning something else than hidden states, a stack that needs inputs the side
does not give) would otherwise build fine and fail at the first training step, or at saving. It costs one
backbone forward of 2 tokens and leaves no trace: evaluation mode (no dropout), the RNG states restored, the
side's gradients reset to None, the train/eval mode restored.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from ..errors import ConfigError


def _is_peft(module: nn.Module) -> bool:
    """A PEFT model, or a model with PEFT's adapter layers injected (their classes live in ``peft.*``)."""
    return any(type(m).__module__.split(".")[0] == "peft" for m in module.modules())


def check_backbone(backbone) -> None:
    """Refuse, in one line, what :func:`~laddertune.core.model.get_ladder_model` cannot put a side network next to.

    Weights on the ``meta`` device pass when accelerate offloaded them (``hf_device_map``) or when the model is
    built under ``torch.device("meta")`` on purpose (parameter counts, shapes): then nothing runs.

    Raises:
        ConfigError: ``backbone`` is None, not a transformers model (no ``config``), wrapped by PEFT, or holds
            weights on the ``meta`` device that no offloading hook will load.
    """
    if backbone is None:
        raise ConfigError("get_ladder_model needs a backbone: a transformers model, got None")
    if not isinstance(backbone, nn.Module) or not isinstance(
        getattr(backbone, "config", None), PretrainedConfig
    ):
        raise ConfigError(
            f"the backbone must be a transformers model with a config (a *ForSequenceClassification, *ForCausalLM "
            f"or *ForConditionalGeneration), got {type(backbone).__module__}.{type(backbone).__name__}"
        )
    if _is_peft(backbone):
        raise ConfigError(
            f"the backbone {type(backbone).__name__} carries PEFT adapters: pass the plain model (merge_and_unload() "
            "folds the adapters into its weights, unload() removes them)"
        )
    offloaded = getattr(backbone, "hf_device_map", None)  # accelerate's disk/CPU offload keeps "meta" weights
    # built under torch.device("meta") on purpose; a new tensor tells (torch.get_default_device() does not see that
    # context before torch 2.7)
    shapes_only = torch.empty(()).device.type == "meta"
    meta = next((n for n, p in backbone.named_parameters() if p.device.type == "meta"), None)
    if meta is not None and not offloaded and not shapes_only:
        raise ConfigError(
            f"the backbone's weights are on the meta device (never loaded; {meta} for one): load them first, "
            "e.g. with from_pretrained without device_map='meta' or init_empty_weights"
        )


def _tiny_batch(model) -> dict:
    """Two tokens: any id, then the end-of-sequence id (families that pool at ``</s>``, BART's, need one)."""
    config = model.backbone.config
    vocab = getattr(config, "vocab_size", None) or 2
    eos = config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    last = eos if isinstance(eos, int) and 0 <= eos < vocab else min(2, vocab - 1)
    embeddings = model.backbone.get_input_embeddings()
    weight = getattr(embeddings, "weight", None)
    device = weight.device if weight is not None and weight.device.type != "meta" else model.device
    ids = torch.tensor([[min(1, vocab - 1), last]], device=device)  # (1, 2)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if model.head == "seq2seq_lm":
        start = getattr(config, "decoder_start_token_id", None)
        start = start if isinstance(start, int) else (config.pad_token_id or 0)
        batch["decoder_input_ids"] = torch.full_like(ids, start)
    return batch


def _fake(model) -> bool:
    """Parameters without data (the memory predictor's FakeTensorMode): nothing to run."""
    from torch._subclasses.fake_tensor import FakeTensor

    param = next(model.side.parameters(), None)
    return param is None or isinstance(param, FakeTensor) or param.device.type == "meta"


def self_check(model) -> None:
    """Run ``model`` (a freshly built LadderModel) forward and backward on a 2-token batch.

    Raises:
        ConfigError: the side network cannot run next to this backbone; the message names the backbone class,
            the family and the first line of what went wrong.
    """
    if _fake(model):
        return
    devices = sorted({p.device.index or 0 for p in model.side.parameters() if p.device.type == "cuda"})
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            model.eval()
            out = model(**_tiny_batch(model))
            logits = out.logits  # (1, 2, vocab) for LM heads, (1, labels) for classification
            if not torch.is_inference_mode_enabled():
                logits.float().sum().backward()
    except Exception as e:  # noqa: BLE001 (anything the family's code raises is the answer)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            f"the side network does not run next to {type(model.backbone).__name__} (family "
            f"{model.family.name!r}): a 2-token forward and backward at build time raised {type(e).__name__}"
            f"{': ' + first if first else ''}"
        ) from None
    finally:
        model.train(was_training)
        for p in model.side.parameters():
            p.grad = None
