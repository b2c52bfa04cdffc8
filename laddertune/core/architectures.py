"""What laddertune knows about an architecture family: the dataclasses discovery fills, and the exceptions table.

The side network of every family is built from the backbone's OWN module classes (``T5Stack``, ``BertEncoder``,
``LlamaModel``, ``BartEncoder``...) with a reduced config, so side layers are ordinary layers of the backbone's kind
(Sung et al. 2022, Section 3.2) and their parameter names mirror the backbone's, which lets pruning initialisation map
parameter to parameter. :mod:`laddertune.core.discovery` finds where things are and which config fields shrink from
the model itself; :data:`FAMILIES` keeps only what a family's structure does not say, each with its reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class StackSpec:
    """One stack of layers (encoder-decoders have an encoder and a decoder stack; other families one).

    Attributes:
        name: ``"encoder"``, ``"decoder"`` or ``"body"``.
        call: path from the backbone root to the module we call to run this stack of the backbone.
        trunk: path from the backbone root to the module whose class (and config) the side trunk copies.
        layers: path inside the trunk to its ``nn.ModuleList`` of layers.
        num_layers: the trunk config's fields that hold its number of layers (all are set on the side config).
        token_embedding: path inside the trunk that holds token embeddings, removed from the side trunk
            (the side reads the backbone's embeddings through its down-projection instead).
        final_norm: path inside the trunk to its final norm, or ``None``.
        applications: when the blocks of ``layers`` are SHARED, which block runs at each application, in call
            order (ALBERT runs its one layer group ``num_hidden_layers`` times: ``(0, 0, ..., 0)``); backbone
            layer i is then application i, and its tap the output of that call. Empty: block i runs once, as
            layer i.
        embedding_projection: path inside the trunk to a projection of the embeddings into the layers' width that
            runs before layer 0 (ALBERT's ``embedding_hidden_mapping_in``); the tap of the embedding output is
            its output, so the side trunk replaces it by an identity.
    """

    name: str
    call: str
    trunk: str
    layers: str
    num_layers: tuple[str, ...]
    token_embedding: str | None
    final_norm: str | None
    applications: tuple[int, ...] = ()
    embedding_projection: str | None = None

    def block(self, i: int) -> int:
        """The index in ``layers`` of the block that runs as backbone layer ``i``."""
        return self.applications[i] if self.applications else i


@dataclass(frozen=True)
class Family:
    """What laddertune needs to know about one architecture family.

    Attributes:
        name: the ``model_type``, for messages.
        stacks: the stacks, in the order they run.
        reduce: config fields divided by the reduction factor (widths, FFN sizes, per-head sizes); heads are kept.
        head_dim: the config field holding the per-head size, or ``None`` when it is hidden_size / heads.
        width: the config field holding the model width.
        heads: the config field holding the number of attention heads.
        side_mask: ``"model"`` when the side trunk builds its attention mask itself from a 2D mask;
            ``"bidirectional"`` when we must build it (a bare encoder module such as ``BertEncoder``); ``"raw"``
            when a bare encoder takes the 2D mask as it is (``DebertaV2Encoder``).
        cls_head: paths from the backbone root to the modules of its sequence-classification head, applied in
            order to the (up-projected) side output; the side network trains deep copies of them. ``"@relu"`` /
            ``"@tanh"`` stand for an activation the head applies as a function call.
        cls_pool: ``"first"``, ``"last"`` (non-padding), ``"eos"`` (last end-of-sentence) token or ``"mean"``,
            pooled before ``cls_head``; ``None`` when the head pools by itself.
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


# The exceptions to discovery, keyed by ``model_type``: each entry overrides the discovered Family fields it names
# and says why the family's own structure does not tell us. A family following transformers' usual conventions
# needs no entry here.
FAMILIES: dict[str, dict] = {
    "distilbert": {
        "cls_head": ("pre_classifier", "@relu", "dropout", "classifier"),
        "cls_pool": "first",
        "why": "the head's ReLU is a function call in forward(), not a module",
    },
    "deberta-v2": {
        "side_mask": "raw",
        "cls_head": ("pooler", "dropout", "classifier"),
        "cls_pool": None,  # ContextPooler takes the first token itself
        "why": "DebertaV2Encoder expands the 2D padding mask itself; the head runs pooler, dropout, classifier, "
        "which is not the modules' registration order",
    },
    "modernbert": {
        "cls_head": ("head", "drop", "classifier"),
        "cls_pool": "first",  # "mean" when config.classifier_pooling == "mean" (discovery reads it)
        "why": "the head pools in forward() as config.classifier_pooling says",
    },
    "bart": {
        "cls_pool": "eos",
        "why": "BartForSequenceClassification pools the last </s> token in forward()",
    },
    "mbart": {"cls_pool": "eos", "why": "as BART"},
    "albert": {
        # Stack-level exceptions (discovery reads them): the layer list is num_hidden_groups long (one group in
        # every released ALBERT) and runs num_hidden_layers times; embedding_size -> hidden_size inside the trunk.
        # What a side layer is: one per APPLICATION of the shared group, num_hidden_layers of them, each with its own
        # weights: the side trunk is an AlbertTransformer at d/r with num_hidden_groups = num_hidden_layers. Each
        # ladder mixes a different depth of the backbone into the side, and a shared side group would have to serve
        # all of them with one set of weights, for a saving of little (the side is ~1/r^2 of a layer per layer). An
        # unshared ALBERT group is BERT's post-norm layer under ALBERT's names, so the side keeps the backbone's
        # class, init and parameter names, and magnitude / Fisher pruning copies the one shared group into every
        # side group (they start equal and train apart). The side input is Down(the mapped embedding output, d
        # wide): the backbone's embedding_hidden_mapping_in has run, so the side trunk's copy is an identity.
        "shared_layers": "num_hidden_groups",
        "embedding_projection": "embedding_hidden_mapping_in",
        "cls_head": ("albert.pooler", "albert.pooler_activation", "dropout", "classifier"),
        "cls_pool": "first",
        "why": "ALBERT shares one layer group over all its layers, and its pooler is a bare Linear + Tanh on "
        "AlbertModel, not BERT's BertPooler",
    },
}


def get_path(root: nn.Module, path: str) -> nn.Module:
    """``get_path(model, "bert.encoder")`` -> ``model.bert.encoder``; ``""`` is ``root``."""
    module = root
    for part in path.split(".") if path else ():
        module = getattr(module, part)
    return module


def layer_modules(backbone: nn.Module, spec: StackSpec) -> nn.ModuleList:
    """A backbone stack's layers in the order they run: a shared block appears once per application (ALBERT's
    one group ``num_hidden_layers`` times), so position i is backbone layer i either way."""
    layers = get_path(get_path(backbone, spec.trunk), spec.layers)
    return nn.ModuleList([layers[b] for b in spec.applications]) if spec.applications else layers


def head_size(family: Family, config) -> int:
    if family.head_dim and getattr(config, family.head_dim, None):
        return int(getattr(config, family.head_dim))
    return getattr(config, family.width) // getattr(config, family.heads)


def reduced_config(
    family: Family, stack: StackSpec, trunk_config, r: int, num_layers: int, *, keep_heads: bool = True
):
    """A copy of a backbone stack's config with widths divided by ``r`` and ``num_layers`` layers.

    Key/value head counts, rotary settings (fractions of the head size), tying and everything else are kept: the
    side config stays one the family's own classes accept. ``keep_heads=False``: the heads are set afterwards
    (:func:`laddertune.core.heads.set_attention_heads`), so ``r`` need not divide the per-head size.

    Raises:
        ConfigError: when ``r`` does not divide a width or (keeping the heads) the per-head size.
    """
    cfg = copy.deepcopy(trunk_config)
    hd = head_size(family, trunk_config)
    for field in family.reduce:
        value = getattr(cfg, field, None)
        if value is None:  # e.g. GPT-2's n_inner=None means 4 * n_embd, which then follows n_embd
            continue
        if field == family.head_dim and not keep_heads:  # set again with the heads
            setattr(cfg, field, max(1, value // r))
            continue
        if value % r:
            raise ConfigError(f"reduction factor {r} does not divide the backbone's {field} ({value})")
        setattr(cfg, field, value // r)
    if hd % r and keep_heads:
        raise ConfigError(f"reduction factor {r} does not divide the backbone's per-head size ({hd})")
    if family.head_dim and getattr(cfg, family.head_dim, None) and family.head_dim not in family.reduce:
        setattr(cfg, family.head_dim, max(1, hd // r))
    for field in stack.num_layers:
        setattr(cfg, field, num_layers)
    return cfg


# Dropout fields of a config that are not the trunk's hidden-state dropout: attention probabilities
# (set_attention_dropout's), layer dropping rates, and the task head's (classifier, pooler, summary, QA).
NOT_HIDDEN_DROPOUT = ("attention", "attn", "layerdrop", "classif", "pooler", "summary", "qa_")


def set_hidden_dropout(config, p: float) -> None:
    """Set a (side) config's dropout on hidden states to ``p``, in place: residual branches, embeddings and
    feed-forward activations.

    The fields are discovered by name, not listed per family: every numeric config attribute that names a dropout
    (``drop``: BERT's ``hidden_dropout_prob``, BART's ``dropout`` and ``activation_dropout``, GPT-2's
    ``resid_pdrop`` and ``embd_pdrop``, T5's ``dropout_rate``), but none of :data:`NOT_HIDDEN_DROPOUT`. T5's
    ``dropout_rate`` drives its attention dropout too.

    Raises:
        ConfigError: when ``p`` is not 0 and the config has no such field (Llama's only dropout is on attention;
            0 there is what it already has).
    """
    names = [
        k
        for k, v in vars(config).items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and "drop" in k
        and not any(part in k for part in NOT_HIDDEN_DROPOUT)
    ]
    if not names and p:
        raise ConfigError(
            f"{type(config).__name__} has no hidden-state dropout to set to {p} (side_dropout needs one)"
        )
    for name in names:
        setattr(config, name, float(p))


def set_attention_dropout(config, p: float) -> None:
    """Set a (side) config's dropout on attention probabilities to ``p``, in place.

    The field is discovered by name, not listed per family: every config attribute that names attention and
    dropout (BERT's ``attention_probs_dropout_prob``, Llama's and BART's ``attention_dropout``, GPT-2's
    ``attn_pdrop``).

    Raises:
        ConfigError: when the config has no such field (T5's ``dropout_rate`` also drives every other dropout).
    """
    names = [
        k
        for k, v in vars(config).items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and (("attention" in k and "dropout" in k) or k == "attn_pdrop")
    ]
    if not names:
        raise ConfigError(
            f"{type(config).__name__} has no attention-only dropout to set (side_attention_dropout needs one)"
        )
    for name in names:
        setattr(config, name, float(p))
