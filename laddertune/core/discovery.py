"""Find a backbone's :class:`Family` from its own modules and config, instead of a row per ``model_type``.

Transformers' families follow a few conventions, and discovery reads them:

- the task model holds its base model under ``base_model_prefix``; an encoder-decoder's base model has
  ``get_encoder()`` / ``get_decoder()``. A sequence classifier over an encoder-decoder (BART) reads the ENCODER
  only, as the paper ran BART-large on GLUE (docs/concepts.md#fact-bart-large-glue);
- each stack's layers are the one ``nn.ModuleList`` of identical blocks (as many as a layer-count config field
  says); the side trunk copies the class of that list's parent. A parent whose ``forward`` takes ``inputs_embeds``
  (``LlamaModel``, ``T5Stack``, ``BartEncoder``, ``OPTDecoder``) builds its masks itself from a 2D mask; one that
  takes ``hidden_states`` (``BertEncoder``) gets a bidirectional mask built for it;
- the embedding output is the input of layer 0 (a hook there, so embedding norms, scaling and dropout are the
  backbone's own); the token embedding is the module that ``get_input_embeddings()`` returns; the final norm is a
  norm child of the trunk registered after the layers;
- widths to shrink are the config's width, FFN and per-head fields present among the usual names.

Shared layers (ALBERT: one group run ``num_hidden_layers`` times) are an exception entry that names the field
counting the shared blocks; the stack then lists which block runs at each application, and each application is a
backbone layer with its own tap. What does not follow these conventions sits in :data:`laddertune.core.architectures.FAMILIES` with its reason.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

import torch
from torch import nn

from ..errors import ConfigError
from .architectures import FAMILIES, Family, StackSpec, get_path

# Config field names, most specific first; the first present (not None) wins for width and heads.
WIDTH_FIELDS = ("d_model", "n_embd", "dim", "hidden_size")
HEAD_FIELDS = ("num_attention_heads", "encoder_attention_heads", "num_heads", "n_head", "n_heads")
HEAD_DIM_FIELDS = ("head_dim", "d_kv")
# FFN and other width-sized fields, each divided by r when present and not None.
FFN_FIELDS = (
    "intermediate_size",
    "d_ff",
    "ffn_dim",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "n_inner",
    "hidden_dim",
    "word_embed_proj_dim",
)
LAYER_FIELDS = (
    "num_hidden_layers",
    "num_layers",
    "num_decoder_layers",
    "encoder_layers",
    "decoder_layers",
    "n_layer",
    "n_layers",
)


def _field(config, names: tuple[str, ...], what: str, model_type: str) -> str:
    for name in names:
        if name in config.__dict__ and getattr(config, name) is not None:
            return name
    raise ConfigError(
        f"cannot discover the {what} of {model_type!r}: its config has none of {', '.join(names)}"
    )


def _layer_list(root: nn.Module, count_fields: dict[str, int], model_type: str, where: str) -> str:
    """Path of the ModuleList of identical blocks whose length a layer-count field gives (the shallowest)."""
    counts = set(count_fields.values())
    hits = [
        name
        for name, m in root.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) in counts and len({type(c) for c in m}) == 1
    ]
    if not hits:
        raise ConfigError(
            f"cannot discover the layers of {model_type!r} ({where}): no nn.ModuleList of identical blocks "
            f"as long as its config's {', '.join(count_fields) or 'layer-count fields'}"
        )
    return min(hits, key=lambda n: n.count("."))


def _stack(
    backbone: nn.Module, name: str, call: str, model_type: str, shared: str | None = None, projection=None
) -> StackSpec:
    """One stack's spec; ``shared``: the config field counting the shared blocks that the layer-count field's
    applications cycle through (ALBERT's ``num_hidden_groups``); ``projection``: :attr:`StackSpec.embedding_projection`."""
    module = get_path(backbone, call)
    cfg = module.config if hasattr(module, "config") else backbone.config
    counts = {f: getattr(cfg, f) for f in LAYER_FIELDS if isinstance(getattr(cfg, f, None), int)}
    applications: tuple[int, ...] = ()
    if shared:  # AlbertTransformer: application i runs group int(i / (num_hidden_layers / num_hidden_groups))
        total, groups = cfg.num_hidden_layers, getattr(cfg, shared)
        applications = tuple(int(i / (total / groups)) for i in range(total))
        counts = {shared: groups}
    layers_path = _layer_list(module, counts, model_type, name)
    parent, _, layers = layers_path.rpartition(".")
    trunk = f"{call}.{parent}".strip(".") if parent else call
    trunk_module = get_path(backbone, trunk)
    n = len(get_path(trunk_module, layers))
    embedding = backbone.get_input_embeddings()
    token_embedding = next(
        (
            p
            for p, m in trunk_module.named_modules()
            if p and (m is embedding or getattr(m, "weight", None) is embedding.weight)
        ),
        None,
    )
    children = list(trunk_module.named_children())
    after = [c for c, m in children[[c for c, _ in children].index(layers) + 1 :] if _is_norm(m)]
    num_layers = tuple(f for f, v in counts.items() if v == n)
    if shared:  # the side gets one unshared block per application: as many groups as layers
        num_layers = ("num_hidden_layers", shared)
    return StackSpec(
        name,
        call,
        trunk,
        layers,
        num_layers,
        token_embedding,
        after[-1] if after else None,
        applications,
        projection,
    )


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "Norm" in type(module).__name__


def _takes_inputs_embeds(module: nn.Module) -> bool:
    return "inputs_embeds" in inspect.signature(module.forward).parameters


def _classifier(backbone: nn.Module, prefix: str, decoder: bool) -> tuple[tuple[str, ...], str | None]:
    """The usual heads: ``score`` on the last token (decoders), BERT's pooler + classifier, or a head module."""
    children = dict(backbone.named_children())
    base = children.get(prefix)
    for name in ("score", "classifier", "classification_head"):
        head = children.get(name)
        if head is None:
            continue
        if not isinstance(head, nn.Linear):  # RobertaClassificationHead & co. pool by themselves
            return (name,), None
        pooler = getattr(base, "pooler", None)
        if pooler is not None and hasattr(pooler, "dense"):  # BERT: first token, pooler dense + tanh
            drop = ("dropout",) if "dropout" in children else ()
            return (f"{prefix}.pooler.dense", f"{prefix}.pooler.activation", *drop, name), "first"
        return (name,), "last" if decoder else "first"
    return (), None


def discover_family(backbone: nn.Module, head: str) -> Family:
    """The :class:`Family` of a transformers task model, from its structure and config (plus the exceptions).

    Args:
        backbone: the task model (``*ForSequenceClassification``, ``*ForCausalLM``, ``*ForConditionalGeneration``).
        head: ``sequence_classification``, ``causal_lm`` or ``seq2seq_lm``.

    Raises:
        ConfigError: naming what could not be discovered.
    """
    config = backbone.config
    model_type = getattr(config, "model_type", type(backbone).__name__)
    override = dict(FAMILIES.get(model_type, {}))
    override.pop("why", None)
    if "unsupported" in override:
        raise ConfigError(f"unsupported architecture {model_type!r}: {override['unsupported']}")
    stack_args = (override.pop("shared_layers", None), override.pop("embedding_projection", None))
    prefix = getattr(backbone, "base_model_prefix", "")
    prefix = prefix if prefix and isinstance(getattr(backbone, prefix, None), nn.Module) else ""
    base = get_path(backbone, prefix)
    if getattr(config, "is_encoder_decoder", False):
        if not (hasattr(base, "encoder") and hasattr(base, "decoder")):
            raise ConfigError(f"cannot discover the encoder and decoder of {model_type!r}")
        names = ("encoder",) if head == "sequence_classification" else ("encoder", "decoder")
        stacks = tuple(_stack(backbone, n, f"{prefix}.{n}".strip("."), model_type) for n in names)
    else:
        stacks = (_stack(backbone, "body", prefix, model_type, *stack_args),)
    trunk = get_path(backbone, stacks[0].trunk)
    cfg = getattr(trunk, "config", config)
    width = _field(cfg, WIDTH_FIELDS, "width", model_type)
    heads = _field(cfg, HEAD_FIELDS, "number of attention heads", model_type)
    head_dim = next((f for f in HEAD_DIM_FIELDS if cfg.__dict__.get(f)), None)  # not attribute_map aliases
    reduce = (width, *(f for f in FFN_FIELDS if f in cfg.__dict__), *((head_dim,) if head_dim else ()))
    decoder = not _takes_inputs_embeds(trunk) or getattr(cfg, "is_decoder", False) or stacks[0].name == "body"
    cls_head, cls_pool = _classifier(backbone, prefix, decoder and _takes_inputs_embeds(trunk))
    family = Family(
        model_type,
        stacks,
        reduce,
        head_dim,
        width,
        heads,
        "model" if _takes_inputs_embeds(trunk) else "bidirectional",
        cls_head,
        cls_pool,
    )
    family = replace(family, **override)
    if model_type == "modernbert" and getattr(config, "classifier_pooling", "cls") == "mean":
        family = replace(family, cls_pool="mean")
    return family


def task_head(backbone: nn.Module) -> str:
    """``seq2seq_lm``, ``causal_lm`` or ``sequence_classification``, from the backbone's task-head class."""
    name = type(backbone).__name__
    if name.endswith("ForSequenceClassification"):
        return "sequence_classification"
    if getattr(backbone.config, "is_encoder_decoder", False) and name.endswith("ForConditionalGeneration"):
        return "seq2seq_lm"
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "causal_lm"
    raise ConfigError(
        f"{name} has no supported task head: pass a *ForConditionalGeneration (T5), *ForCausalLM or "
        f"*ForSequenceClassification model"
    )


def apply_lm_head_extras(backbone: nn.Module, logits):
    """What a backbone's LM forward does to its head's output, found on the model itself: a ``final_logits_bias``
    buffer (BART, mBART, Pegasus, Marian), a ``logit_scale`` (Cohere) or a ``final_logit_softcapping`` (Gemma 2
    and 3) in its config. LST's LM logits then equal the backbone's for the same final hidden state."""
    bias = getattr(backbone, "final_logits_bias", None)
    if isinstance(bias, torch.Tensor):
        logits = logits + bias.to(logits)
    config = backbone.config
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, int | float) and not isinstance(scale, bool):
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if isinstance(cap, int | float) and not isinstance(cap, bool) and cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
