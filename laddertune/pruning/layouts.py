"""The layer layouts pruning initialisation knows, matched to a backbone by its layers' module names.

A layout lists one layer's steps in forward order (norms, attention, feed-forward) with their module names
relative to the layer; :mod:`laddertune.pruning.structure` walks it to choose coupled rows and columns.
"""

from __future__ import annotations

from dataclasses import dataclass


# -- the steps ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Norm:
    """A norm over the residual stream: its weight (and bias) take the incoming dims."""

    name: str


@dataclass(frozen=True)
class Attention:
    """Separate Q/K/V/O projections (names relative to the layer); ``cross`` reads the encoder's output."""

    q: str
    k: str
    v: str
    o: str
    cross: bool = False
    position_bias: str | None = None  # T5: copied whole from backbone layer 0, where the side layer has one


@dataclass(frozen=True)
class FusedAttention:
    """GPT-2's ``c_attn``: Q, K and V stacked along the output dim."""

    qkv: str
    o: str


@dataclass(frozen=True)
class FeedForward:
    """``ins`` rows are scored together (names absent from a layer are skipped: T5 v1.0 ``wi`` or v1.1 ``wi_0/1``)."""

    ins: tuple[str, ...]
    out: str


@dataclass(frozen=True)
class Layout:
    """One layer's steps in forward order, per stack; ``conv1d``: weights are (in, out) as GPT-2's Conv1D."""

    layers: dict[str, tuple]
    conv1d: bool = False
    hidden_tables: tuple[str, ...] = ()  # trunk-level (n, hidden) tables whose columns take the hidden dims


def _t5_attention(prefix: str, cross: bool = False) -> Attention:
    bias = None if cross else f"{prefix}.relative_attention_bias"
    return Attention(f"{prefix}.q", f"{prefix}.k", f"{prefix}.v", f"{prefix}.o", cross, bias)


def _t5_ffn(layer: int) -> FeedForward:
    p = f"layer.{layer}.DenseReluDense"
    return FeedForward((f"{p}.wi", f"{p}.wi_0", f"{p}.wi_1"), f"{p}.wo")


_BERT = Layout(
    {
        "body": (
            Attention(
                "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"
            ),
            Norm("attention.output.LayerNorm"),  # post-norm: after the residual add
            FeedForward(("intermediate.dense",), "output.dense"),
            Norm("output.LayerNorm"),
        )
    }
)
_LLAMA = Layout(
    {
        "body": (
            Norm("input_layernorm"),
            Attention("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
            Norm("post_attention_layernorm"),
            FeedForward(("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
        )
    }
)
_BART = Layout(
    {
        stack: (
            Attention("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
            Norm("self_attn_layer_norm"),  # BART is post-norm; mBART pre-norm: the same dims either way
            *(
                (
                    Attention(
                        "encoder_attn.q_proj",
                        "encoder_attn.k_proj",
                        "encoder_attn.v_proj",
                        "encoder_attn.out_proj",
                        cross=True,
                    ),
                    Norm("encoder_attn_layer_norm"),
                )
                if stack == "decoder"
                else ()
            ),
            FeedForward(("fc1",), "fc2"),
            Norm("final_layer_norm"),
        )
        for stack in ("encoder", "decoder", "body")
    }
)
# Layouts are matched by STRUCTURE (the module names of a backbone layer), not by model_type: XLM-R, ELECTRA and
# the other BERT clones take BERT's, Qwen3 and Gemma Llama's, OPT and mBART BART's. Side parameters a layout does
# not name (Qwen3's q/k norms, position tables, a family no layout matches) are filled by `_Pruner.fallback`.
_ALBERT = Layout(  # one layer group of AlbertTransformer (inner_group_num=1 in every released ALBERT)
    {
        "body": (
            Attention(
                "albert_layers.0.attention.query",
                "albert_layers.0.attention.key",
                "albert_layers.0.attention.value",
                "albert_layers.0.attention.dense",
            ),
            Norm("albert_layers.0.attention.LayerNorm"),  # post-norm, as BERT
            FeedForward(("albert_layers.0.ffn",), "albert_layers.0.ffn_output"),
            Norm("albert_layers.0.full_layer_layer_norm"),
        )
    }
)
LAYOUTS: dict[str, Layout] = {
    "albert": _ALBERT,
    "bart": _BART,
    "t5": Layout(
        {
            "encoder": (
                Norm("layer.0.layer_norm"),
                _t5_attention("layer.0.SelfAttention"),
                Norm("layer.1.layer_norm"),
                _t5_ffn(1),
            ),
            "decoder": (
                Norm("layer.0.layer_norm"),
                _t5_attention("layer.0.SelfAttention"),
                Norm("layer.1.layer_norm"),
                _t5_attention("layer.1.EncDecAttention", cross=True),
                Norm("layer.2.layer_norm"),
                _t5_ffn(2),
            ),
        }
    ),
    "bert": _BERT,
    "roberta": _BERT,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt2": Layout(
        {
            "body": (
                Norm("ln_1"),
                FusedAttention("attn.c_attn", "attn.c_proj"),
                Norm("ln_2"),
                FeedForward(("mlp.c_fc",), "mlp.c_proj"),
            )
        },
        conv1d=True,
        hidden_tables=("wpe",),
    ),
}
