"""How the side network splits its width into attention heads (``LadderConfig.side_attention_heads``).

The authors keep the backbone's number of heads, each d_head / r wide: 4-wide heads for MiniLM at r = 8, 8-wide for
Llama. Attention kernels are slow on heads that narrow (the side step's largest cost on CPU,
``benchmarks/results/side_step_profile.md``; flash kernels on a GPU tile head dims of 64 and more), so by default
the side chooses its own: heads 64 wide, or one head as wide as the side when it is narrower than 64 (the
measurement that chose it: ``benchmarks/results/llm_scale_accuracy_minilm.md``). A random initialisation takes any shape;
a pruned one keeps whole backbone heads where the sizes allow (:mod:`laddertune.pruning.structure`).
"""

from __future__ import annotations

from ..errors import ConfigError
from .architectures import Family

HEAD_SIZE = 64  # the side's head width where the side is at least this wide
KV_FIELD = "num_key_value_heads"


def auto_heads(width: int) -> int:
    """The number of side heads for a side ``width``: as many 64-wide heads as fit (then each width / heads, 64 to
    127 wide), and one head for a side narrower than 64."""
    heads = max(1, width // HEAD_SIZE)
    while width % heads:
        heads -= 1
    return heads


def kv_heads_for(heads: int, backbone_heads: int, backbone_kv_heads: int | None) -> int | None:
    """Key/value heads of a side with ``heads`` query heads: the backbone's grouping (query heads per key/value
    head) where it divides, else the nearest count that divides ``heads``; None for a backbone without them."""
    if backbone_kv_heads is None:
        return None
    kv = max(1, heads * backbone_kv_heads // backbone_heads)
    while heads % kv:
        kv -= 1
    return kv


def set_attention_heads(family: Family, config, heads: int | None, backbone_config) -> None:
    """Split a (side) config's width into ``heads`` attention heads, in place.

    ``None``: :func:`auto_heads`; ``0``: leave the reduced config as it is (the backbone's number of heads,
    d_head / r wide, the authors' side network). Every head-count field is set (BART's encoder and decoder ones),
    the per-head size field where the family has one (T5's ``d_kv``, Llama's ``head_dim``), and the key/value head
    count of grouped-query attention (:func:`kv_heads_for`).

    Raises:
        ConfigError: when ``heads`` does not divide the side width.
    """
    if heads == 0:
        return
    width = getattr(config, family.width)
    heads = auto_heads(width) if heads is None else heads
    if width % heads:
        raise ConfigError(f"side_attention_heads {heads} does not divide the side width ({width})")
    backbone_heads = getattr(backbone_config, family.heads)
    backbone_kv = backbone_config.__dict__.get(KV_FIELD)
    for field in [k for k in vars(config) if k == family.heads or k.endswith("attention_heads")]:
        setattr(config, field, heads)
    if family.head_dim and getattr(config, family.head_dim, None):
        setattr(config, family.head_dim, width // heads)
    kv = kv_heads_for(heads, backbone_heads, backbone_kv)
    if kv is not None:
        setattr(config, KV_FIELD, kv)
