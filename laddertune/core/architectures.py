"""Per-architecture knowledge, as a table keyed by ``model_type``.

The side network of every family is built from the backbone's OWN module classes (``T5Stack``, ``BertEncoder``,
``LlamaModel``, ``GPT2Model``...) with a reduced config, so side layers are ordinary layers of the backbone's kind
(Sung et al. 2022, Section 3.2) and their parameter names mirror the backbone's, which lets pruning initialisation map
parameter to parameter. What a family must tell us is only where things are and which config fields shrink.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class StackSpec:
    """One stack of layers (T5 has an encoder and a decoder stack; other families one).

    Attributes:
        name: ``"encoder"``, ``"decoder"`` or ``"body"``.
        call: path from the backbone root to the module we call to run this stack of the backbone.
        trunk: path from the backbone root to the module whose class (and config) the side trunk copies.
        layers: path inside the trunk to its ``nn.ModuleList`` of layers.
        num_layers: the trunk config's field that holds its number of layers.
        token_embedding: path inside the trunk that holds token embeddings, removed from the side trunk
            (the side reads the backbone's embeddings through its down-projection instead).
        final_norm: path inside the trunk to its final norm, or ``None``.
    """

    name: str
    call: str
    trunk: str
    layers: str
    num_layers: str
    token_embedding: str | None
    final_norm: str | None


@dataclass(frozen=True)
class Family:
    """What laddertune needs to know about one architecture family.

    Attributes:
        name: a short name for messages.
        stacks: the stacks, in the order they run.
        reduce: config fields divided by the reduction factor (widths); heads are kept.
        head_dim: the config field holding the per-head size, or ``None`` when it is hidden_size / heads.
        width: the config field holding the model width.
        heads: the config field holding the number of attention heads.
        side_mask: ``"model"`` when the side trunk builds its attention mask itself from a 2D mask;
            ``"bidirectional"`` when we must build it (a bare encoder module such as ``BertEncoder``).
        cls_head: paths from the backbone root to the modules of its sequence-classification head, applied in
            order to the (up-projected) side output; the side network trains deep copies of them.
        cls_pool: ``"first"`` or ``"last"`` (non-padding) token pooled before ``cls_head``; ``None`` when the head
            pools by itself.
    """

    name: str
    stacks: tuple[StackSpec, ...]
    reduce: tuple[str, ...]
    head_dim: str | None
    width: str
    heads: str
    side_mask: str
    cls_head: tuple[str, ...] = ()
    cls_pool: str | None = None


def _t5_stack(name: str) -> StackSpec:
    return StackSpec(name, name, name, "block", "num_layers", "embed_tokens", "final_layer_norm")


def _bert_like(name: str, prefix: str, cls_head: tuple[str, ...], cls_pool: str | None) -> Family:
    stack = StackSpec("body", prefix, f"{prefix}.encoder", "layer", "num_hidden_layers", None, None)
    return Family(
        name,
        (stack,),
        ("hidden_size", "intermediate_size"),
        None,
        "hidden_size",
        "num_attention_heads",
        "bidirectional",
        cls_head,
        cls_pool,
    )


def _decoder_only(name: str, prefix: str, *, gpt2: bool = False) -> Family:
    if gpt2:
        stack = StackSpec("body", prefix, prefix, "h", "n_layer", "wte", "ln_f")
        return Family(name, (stack,), ("n_embd",), None, "n_embd", "n_head", "model", ("score",), "last")
    stack = StackSpec("body", prefix, prefix, "layers", "num_hidden_layers", "embed_tokens", "norm")
    return Family(
        name,
        (stack,),
        ("hidden_size", "intermediate_size"),
        "head_dim",
        "hidden_size",
        "num_attention_heads",
        "model",
        ("score",),
        "last",
    )


_T5 = Family(
    "t5",
    (_t5_stack("encoder"), _t5_stack("decoder")),
    ("d_model", "d_ff", "d_kv"),
    "d_kv",
    "d_model",
    "num_heads",
    "model",
)

FAMILIES: dict[str, Family] = {
    "t5": _T5,
    # BERT's pooler reads the first token; RoBERTa's classification head pools by itself.
    "bert": _bert_like(
        "bert", "bert", ("bert.pooler.dense", "bert.pooler.activation", "dropout", "classifier"), "first"
    ),
    "roberta": _bert_like("roberta", "roberta", ("classifier",), None),
    "llama": _decoder_only("llama", "model"),
    "mistral": _decoder_only("mistral", "model"),
    "qwen2": _decoder_only("qwen2", "model"),
    "gpt2": _decoder_only("gpt2", "transformer", gpt2=True),
}


def get_family(config) -> Family:
    """Return the table entry for a backbone config, or raise a clear error naming what is supported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ConfigError(
            f"unsupported architecture {model_type!r}; laddertune supports model_type "
            f"{', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def get_path(root: nn.Module, path: str) -> nn.Module:
    """``get_path(model, "bert.encoder")`` -> ``model.bert.encoder``."""
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def head_size(family: Family, config) -> int:
    if family.head_dim and getattr(config, family.head_dim, None):
        return int(getattr(config, family.head_dim))
    return getattr(config, family.width) // getattr(config, family.heads)


def reduced_config(family: Family, stack: StackSpec, trunk_config, r: int, num_layers: int):
    """A copy of a backbone stack's config with widths divided by ``r`` and ``num_layers`` layers.

    Raises:
        ConfigError: when ``r`` does not divide a width or the per-head size.
    """
    cfg = copy.deepcopy(trunk_config)
    hd = head_size(family, trunk_config)
    for field in family.reduce:
        value = getattr(cfg, field, None)
        if value is None:  # e.g. GPT-2's n_inner=None means 4 * n_embd, which then follows n_embd
            continue
        if value % r:
            raise ConfigError(f"reduction factor {r} does not divide the backbone's {field} ({value})")
        setattr(cfg, field, value // r)
    if hd % r:
        raise ConfigError(f"reduction factor {r} does not divide the backbone's per-head size ({hd})")
    if family.head_dim and getattr(cfg, family.head_dim, None) and family.head_dim not in family.reduce:
        setattr(cfg, family.head_dim, hd // r)
    setattr(cfg, stack.num_layers, num_layers)
    if hasattr(cfg, "n_inner") and getattr(cfg, "n_inner", None):
        if cfg.n_inner % r:
            raise ConfigError(f"reduction factor {r} does not divide the backbone's n_inner ({cfg.n_inner})")
        cfg.n_inner //= r
    return cfg
