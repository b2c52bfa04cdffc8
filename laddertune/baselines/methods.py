"""The paper's baselines (full fine-tuning, LoRA, Adapters, BitFit, prompt tuning) behind one function.

``prepare_baseline(backbone, method)`` returns a module whose ``forward(**batch)`` gives the Hugging Face output
(``.loss``, ``.logits``), which has ``generate`` when the backbone has it, and whose parameters with
``requires_grad=True`` are exactly the method's. Settings follow the authors' runs (docs/concepts.md#fact-training-settings).

Who trains what:

- ``full``: every parameter.
- ``lora``: PEFT LoRA matrices on the target projections (``q``, ``v`` for T5, self- and cross-attention).
  The authors' LoRA config also switched BitFit on; here LoRA trains alone (PEFT's ``bias="none"``).
- ``adapter``: bottleneck adapters (:mod:`laddertune.baselines.adapters`) and every layer norm.
- ``bitfit``: bias parameters only. Models without biases in their layers (T5, Llama) get zero biases first.
- ``prompt``: PEFT prompt tuning, ``prompt_length`` vectors initialised from the first vocabulary embeddings.

A *new* classification head (``classifier``, ``score``, ``classification_head`` of a ``*ForSequenceClassification``
model) is always trainable, whatever the method: it starts random, so a method that froze it could not learn the task.

``freeze_layers=N`` (the paper's Figure 6) freezes the first N layers, counting the encoder's layers and then the
decoder's for T5, and inserts nothing there. The embeddings count as frozen with the first layer; a stack's final
norm counts with its last layer.

Both ``full``/``bitfit``/``adapter`` change the given backbone in place and return it; ``lora``/``prompt`` wrap it in a
PEFT model (which also changes it in place).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from ..errors import ConfigError
from .adapters import add_adapters
from .options import BASELINE_OPTIONS, AdapterOptions, BitFitOptions, LoraOptions, PromptOptions

BASELINES = tuple(BASELINE_OPTIONS)

logger = logging.getLogger(__name__)

# Names of a freshly initialised sequence-classification head (BERT/RoBERTa, GPT-2/Llama, T5).
HEAD_NAMES = ("classifier", "score", "classification_head")


@dataclass(frozen=True)
class Family:
    """What the baselines need to know about one architecture."""

    stacks: tuple[str, ...]
    """Names of the ModuleLists of layers (matched as a name suffix), in freezing order."""
    lora_targets: tuple[str, ...]
    """Default LoRA target modules, matched by PEFT as a name suffix."""


FAMILIES: dict[str, Family] = {
    "t5": Family(stacks=("encoder.block", "decoder.block"), lora_targets=("q", "v")),
    "bert": Family(stacks=("encoder.layer",), lora_targets=("query", "value")),
    "gpt2": Family(stacks=("h",), lora_targets=("c_attn",)),
    "llama": Family(stacks=("layers",), lora_targets=("q_proj", "v_proj")),
    "bart": Family(stacks=("encoder.layers", "decoder.layers"), lora_targets=("q_proj", "v_proj")),
}


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied parameter counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def prepare_baseline(backbone: nn.Module, method: str, options=None, **overrides) -> nn.Module:
    """Make a Hugging Face model trainable the way a baseline method trains it.

    Args:
        backbone: a ``*ForConditionalGeneration`` / ``*ForCausalLM`` / ``*ForSequenceClassification`` model.
            It is modified in place; pass a fresh one per call.
        method: one of :data:`BASELINES` (``full``, ``lora``, ``adapter``, ``bitfit``, ``prompt``).
        options: the method's options (:mod:`laddertune.baselines.options`, e.g. ``LoraOptions(lora_rank=8)``);
            default: the method's defaults.
        **overrides: options of the method to change, e.g. ``freeze_layers=6``.

    Returns:
        A module whose ``forward(**batch)`` returns the backbone's output and whose trainable parameters are the
        method's (plus a new classification head).

    Raises:
        ConfigError: unknown method, an option the method does not have, a setting that does not fit the backbone,
            or nothing left to train.
    """
    if method not in BASELINE_OPTIONS:
        raise ConfigError(
            f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)} (LST and its ablations are built "
            "with laddertune.get_ladder_model)"
        )
    cls = BASELINE_OPTIONS[method]
    options = options or cls()
    if not isinstance(options, cls):
        raise ConfigError(f"method {method} takes {cls.__name__}, got {type(options).__name__}")
    unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
    if unknown:
        owners = [
            name for name, other in BASELINE_OPTIONS.items() if unknown[0] in {f.name for f in fields(other)}
        ]
        whose = f"an option of method {', '.join(owners)}" if owners else "not an option of any method"
        raise ConfigError(f"{unknown[0]} is {whose}, not of method {method}")
    options = replace(options, **overrides)
    n = getattr(options, "freeze_layers", 0)
    # The per-family table is needed only to find layers or default LoRA targets; `full` and `prompt` work on any
    # Hugging Face model.
    lora_default = isinstance(options, LoraOptions) and options.lora_targets is None
    layout = (
        _Layout(backbone)
        if n or isinstance(options, (BitFitOptions, AdapterOptions)) or lora_default
        else None
    )
    if layout is not None and n > len(layout.layers):
        raise ConfigError(f"freeze_layers={n} but the backbone has only {len(layout.layers)} layers")
    model = _BUILDERS[method](backbone, options, layout, n)
    trainable, total = count_trainable(model)
    if trainable == 0:
        raise ConfigError(f"freeze_layers={n} leaves nothing to train for {method}")
    logger.info(
        "%s: %d of %d parameters trainable (%.3f%%)", method, trainable, total, 100 * trainable / total
    )
    return model


def _full(backbone, options, layout, n):
    _set_trainable(backbone, layout, n, lambda info: True)
    return backbone


def _bitfit(backbone, options, layout, n):
    _add_zero_biases(layout.layers[n:])
    _set_trainable(backbone, layout, n, lambda info: info.name.rsplit(".", 1)[-1] == "bias")
    return backbone


def _adapter(backbone, options, layout, n):
    cfg = backbone.config
    add_adapters(
        [m for _, m in layout.layers[n:]], cfg.model_type, cfg.hidden_size, options.adapter_reduction
    )
    _set_trainable(backbone, layout, n, lambda info: ".adapter." in info.name or info.is_norm)
    return backbone


class _Layout:
    """Where a backbone's layers are, and which 'slot' (position in freezing order) each parameter has.

    Slots: -1 for embeddings, the global layer index for anything inside a layer, the stack's last layer for a
    stack's final norm, and len(layers) for everything after the layers (LM head, pooler, classification head).
    """

    def __init__(self, backbone: nn.Module):
        model_type = backbone.config.model_type
        if model_type not in FAMILIES:
            raise ConfigError(
                f"model type {model_type!r} is not supported here; supported: {', '.join(FAMILIES)}"
            )
        self.family = FAMILIES[model_type]
        modules = dict(backbone.named_modules())
        self.layers: list[tuple[str, nn.Module]] = []  # (full name, layer) in freezing order
        self.stack_ends: dict[str, int] = {}  # the stack's parent name -> global index of its last layer
        for suffix in self.family.stacks:
            hits = [
                k
                for k, m in modules.items()
                if isinstance(m, nn.ModuleList) and (k == suffix or k.endswith("." + suffix))
            ]
            if len(hits) != 1:
                raise ConfigError(
                    f"expected one layer list {suffix!r} in the {model_type} backbone, found {len(hits)}"
                )
            self.layers += [(f"{hits[0]}.{i}", m) for i, m in enumerate(modules[hits[0]])]
            self.stack_ends[hits[0].rpartition(".")[0]] = len(self.layers) - 1

    def slot(self, name: str, module: nn.Module) -> int:
        for g, (prefix, _) in enumerate(self.layers):
            if name == prefix or name.startswith(prefix + "."):
                return g
        if isinstance(module, nn.Embedding) or "embeddings" in name.split("."):
            return -1
        if _is_norm(module) and name.rpartition(".")[0] in self.stack_ends:
            return self.stack_ends[name.rpartition(".")[0]]
        return len(self.layers)


@dataclass
class _ParamInfo:
    name: str
    slot: int
    is_norm: bool
    is_head: bool


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "Norm" in type(module).__name__


def _head_names(backbone: nn.Module) -> list[str]:
    if not type(backbone).__name__.endswith("ForSequenceClassification"):
        return []
    return [name for name, _ in backbone.named_children() if name in HEAD_NAMES]


def _set_trainable(backbone: nn.Module, layout: _Layout | None, n: int, chosen) -> None:
    """requires_grad = chosen(info) and not in a frozen layer; a new classification head always trains."""
    heads = tuple(_head_names(backbone))
    infos: dict[int, tuple[nn.Parameter, _ParamInfo]] = {}
    for mname, module in backbone.named_modules():
        slot = layout.slot(mname, module) if layout else 0
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            head = mname.split(".")[0] in heads
            if id(p) in infos:  # tied: the earliest use decides (T5's LM head is its input embedding)
                info = infos[id(p)][1]
                info.slot = min(info.slot, slot)
                info.is_head &= head
            else:
                infos[id(p)] = (p, _ParamInfo(name, slot, _is_norm(module), head))
    for p, info in infos.values():
        frozen = n > 0 and info.slot < n
        p.requires_grad_(info.is_head or (chosen(info) and not frozen))


def _add_zero_biases(layers: list[tuple[str, nn.Module]]) -> None:
    """Give every bias-free nn.Linear inside the layers a zero bias, as the authors did for BitFit on T5.

    transformers' T5 and Llama build their projections as ``nn.Linear(bias=False)``; ``nn.Linear.forward`` passes
    ``self.bias`` to ``F.linear``, so registering a zero Parameter there adds a bias without changing the output.
    """
    for _, layer in layers:
        for module in layer.modules():
            if isinstance(module, nn.Linear) and module.bias is None:
                # new_zeros: same device/dtype without Module.to (works under FakeTensorMode too)
                module.bias = nn.Parameter(module.weight.new_zeros(module.out_features))


def peft_task_type(backbone: nn.Module) -> str:
    if type(backbone).__name__.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    if getattr(backbone.config, "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    if backbone.can_generate():
        return "CAUSAL_LM"
    raise ConfigError(
        f"{type(backbone).__name__} has no supported head; load it as seq2seq_lm, causal_lm or sequence_classification"
    )


def get_peft_model(backbone: nn.Module, peft_config) -> nn.Module:
    """``peft.get_peft_model`` without the FutureWarning it causes on transformers 5: PEFT 0.21 reads the backbone's
    ``is_gradient_checkpointing``, which transformers deprecated for ``is_activation_checkpointing``; the warning
    names nothing the user did or can change, so it is filtered here, around this one call."""
    import peft

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        return peft.get_peft_model(backbone, peft_config)


def _lora(backbone: nn.Module, config: LoraOptions, layout: _Layout | None, n: int) -> nn.Module:
    from peft import LoraConfig

    targets = config.lora_targets or layout.family.lora_targets
    # Explicit module names rather than PEFT's layers_to_transform: T5 has two stacks that both count from 0,
    # while freezing counts the encoder's layers and then the decoder's.
    names = [
        name
        for name, module in backbone.named_modules()
        if any(name == t or name.endswith("." + t) for t in targets)
        and not (n > 0 and layout.slot(name, module) < n)
    ]
    if not names:
        why = f" outside the first {n} layers" if n else ""
        raise ConfigError(f"no module matches lora_targets {', '.join(targets)}{why}")
    lora_config = LoraConfig(
        task_type=peft_task_type(backbone),
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=names,
        modules_to_save=_head_names(backbone) or None,
        fan_in_fan_out=backbone.config.model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
    )
    try:
        return get_peft_model(backbone, lora_config)
    except ValueError as e:
        raise ConfigError(f"LoRA does not fit this backbone: {e}") from None


def _prompt(backbone: nn.Module, config: PromptOptions, layout=None, n: int = 0) -> nn.Module:
    from peft import PromptTuningConfig, PromptTuningInit

    n = config.prompt_length
    embeddings = backbone.get_input_embeddings().weight  # (vocab, d)
    if n > embeddings.shape[0]:
        raise ConfigError(f"prompt_length={n} exceeds the vocabulary size {embeddings.shape[0]}")
    prompt_config = PromptTuningConfig(
        task_type=peft_task_type(backbone),
        num_virtual_tokens=n,
        # One set of prompts, prepended to the encoder input only (PEFT's seq2seq default of 2 would create a
        # second, unused set for the decoder).
        num_transformer_submodules=1,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )
    model = get_peft_model(backbone, prompt_config)
    # PEFT has no "first n vocabulary rows" init (SAMPLE_VOCAB draws random ids, TEXT needs a tokenizer), so we
    # start from RANDOM and copy embeddings[:n], as the authors initialised their 100 prompt vectors.
    prompt = model.prompt_encoder[model.active_adapter].embedding.weight  # (n, d)
    with torch.no_grad():
        prompt.copy_(embeddings[:n])
    return model


_BUILDERS = {"full": _full, "bitfit": _bitfit, "adapter": _adapter, "lora": _lora, "prompt": _prompt}
