"""The paper's baselines (full fine-tuning, LoRA, Adapters, BitFit, prompt tuning) behind one function.

``prepare_baseline(backbone, method)`` returns a module whose ``forward(**batch)`` gives the Hugging Face output
(``.loss``, ``.logits``), which has ``generate`` when the backbone has it, and whose parameters with
``requires_grad=True`` are exactly the method's. Settings follow the authors' runs (lst-reference.md §4).

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
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn

from ..errors import ConfigError
from .adapters import add_adapters

logger = logging.getLogger(__name__)

METHODS = ("lst", "full", "lora", "adapter", "bitfit", "prompt")
BASELINES = tuple(m for m in METHODS if m != "lst")

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


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the baselines; the defaults are the authors' (lst-reference.md §4)."""

    lora_rank: int = 32
    """LoRA rank r."""
    lora_alpha: float = 32
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch's input."""
    lora_targets: tuple[str, ...] | None = None
    """Module names LoRA adapts (name suffixes, PEFT's rule); None: the family's default (T5 ``q``, ``v``;
    BERT ``query``, ``value``; Llama ``q_proj``, ``v_proj``; GPT-2 ``c_attn``). A string is split on commas."""
    adapter_reduction: int = 16
    """Adapter bottleneck width is hidden_size // adapter_reduction."""
    prompt_length: int = 100
    """Number of soft prompt vectors for prompt tuning."""
    freeze_layers: int = 0
    """Freeze the first N layers (T5: encoder layers first, then decoder) and insert nothing there."""

    def __post_init__(self):
        for name, minimum in (
            ("lora_rank", 1),
            ("adapter_reduction", 1),
            ("prompt_length", 1),
            ("freeze_layers", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if (
            isinstance(self.lora_alpha, bool)
            or not isinstance(self.lora_alpha, int | float)
            or self.lora_alpha <= 0
        ):
            raise ConfigError(f"lora_alpha must be a positive number, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, int | float) or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        targets = self.lora_targets
        if targets is not None:
            if isinstance(targets, str):
                targets = [t.strip() for t in targets.split(",")]
            targets = tuple(targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(
                    f"lora_targets must be a non-empty list of module names, got {self.lora_targets!r}"
                )
            object.__setattr__(self, "lora_targets", targets)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``lora_targets`` as a list)."""
        d = asdict(self)
        if d["lora_targets"] is not None:
            d["lora_targets"] = list(d["lora_targets"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BaselineConfig:
        """Inverse of :meth:`to_dict`. Raises ConfigError on unknown keys."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown baseline setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied parameter counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def prepare_baseline(
    backbone: nn.Module, method: str, config: BaselineConfig | None = None, **overrides
) -> nn.Module:
    """Make a Hugging Face model trainable the way a baseline method trains it.

    Args:
        backbone: a ``*ForConditionalGeneration`` / ``*ForCausalLM`` / ``*ForSequenceClassification`` model.
            It is modified in place; pass a fresh one per call.
        method: one of :data:`BASELINES`.
        config: the settings; default :class:`BaselineConfig()`.
        **overrides: fields of :class:`BaselineConfig` to change, e.g. ``freeze_layers=6``.

    Returns:
        A module whose ``forward(**batch)`` returns the backbone's output and whose trainable parameters are the
        method's (plus a new classification head).

    Raises:
        ConfigError: unknown method, ``lst``, a setting that does not fit the backbone, or nothing left to train.
    """
    if method == "lst":
        raise ConfigError(
            "LST is not a baseline: build it with laddertune.get_ladder_model(backbone, LadderConfig())"
        )
    if method not in BASELINES:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    config = config or BaselineConfig()
    unknown = set(overrides) - {f.name for f in fields(BaselineConfig)}
    if unknown:
        raise ConfigError(f"unknown baseline setting(s): {', '.join(sorted(unknown))}")
    config = replace(config, **overrides)
    n = config.freeze_layers
    if method == "prompt" and n:
        raise ConfigError(
            "freeze_layers does not apply to prompt tuning: it has no parameters inside the layers"
        )
    # The per-family table is needed only to find layers or default LoRA targets; `full` and `prompt` work on any
    # Hugging Face model.
    needs_layout = n or method in ("bitfit", "adapter") or (method == "lora" and config.lora_targets is None)
    layout = _Layout(backbone) if needs_layout else None
    if layout is not None and n > len(layout.layers):
        raise ConfigError(f"freeze_layers={n} but the backbone has only {len(layout.layers)} layers")

    if method == "full":
        _set_trainable(backbone, layout, n, lambda info: True)
        model = backbone
    elif method == "bitfit":
        _add_zero_biases(layout.layers[n:])
        _set_trainable(backbone, layout, n, lambda info: info.name.rsplit(".", 1)[-1] == "bias")
        model = backbone
    elif method == "adapter":
        cfg = backbone.config
        add_adapters(
            [m for _, m in layout.layers[n:]], cfg.model_type, cfg.hidden_size, config.adapter_reduction
        )
        _set_trainable(backbone, layout, n, lambda info: ".adapter." in info.name or info.is_norm)
        model = backbone
    elif method == "lora":
        model = _lora(backbone, config, layout)
    else:
        model = _prompt(backbone, config)

    trainable, total = count_trainable(model)
    if trainable == 0:
        raise ConfigError(f"freeze_layers={n} leaves nothing to train for {method}")
    logger.info(
        "%s: %d of %d parameters trainable (%.3f%%)", method, trainable, total, 100 * trainable / total
    )
    return model


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


def _task_type(backbone: nn.Module) -> str:
    if type(backbone).__name__.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    if getattr(backbone.config, "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    if backbone.can_generate():
        return "CAUSAL_LM"
    raise ConfigError(
        f"{type(backbone).__name__} has no supported head; load it as seq2seq_lm, causal_lm or sequence_classification"
    )


def _lora(backbone: nn.Module, config: BaselineConfig, layout: _Layout | None) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = config.lora_targets or layout.family.lora_targets
    n = config.freeze_layers
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
        task_type=_task_type(backbone),
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


def _prompt(backbone: nn.Module, config: BaselineConfig) -> nn.Module:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    n = config.prompt_length
    embeddings = backbone.get_input_embeddings().weight  # (vocab, d)
    if n > embeddings.shape[0]:
        raise ConfigError(f"prompt_length={n} exceeds the vocabulary size {embeddings.shape[0]}")
    prompt_config = PromptTuningConfig(
        task_type=_task_type(backbone),
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
