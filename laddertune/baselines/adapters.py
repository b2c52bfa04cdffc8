"""Houlsby-style bottleneck adapters inserted into an unmodified Hugging Face backbone (the paper's Adapters baseline).

An adapter is ``x + up(relu(down(x)))`` with ``down: d -> d/reduction`` and ``up: d/reduction -> d``. It is placed on
the output of each layer's attention output projection and of its feed-forward output projection, before the
layer's residual addition, as in the authors' runs (reduction 16, every layer, see docs/concepts.md#fact-training-settings).

Why not AdapterHub's ``adapters`` package: its latest release (1.3.0) requires ``transformers~=4.57.6`` and this
project is on transformers 5.23, so it cannot be installed next to our backbone code. What we need is small enough to
write here.

How they are inserted (composition, no forked modeling file): the adapter becomes a child module named ``adapter`` of
the projection it follows (``...attention.output.dense.adapter.down.weight``), and a forward hook on that projection
replaces its output ``y`` by ``adapter(y)``. The backbone's own parameter names are therefore unchanged (a pretrained
checkpoint still loads), and the adapter's parameters are easy to pick out by name.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from ..errors import ConfigError

# model_type -> the output projections that get an adapter, as names relative to one layer (``*`` matches any
# text: T5's feed-forward sub-layer is ``layer.1`` in the encoder and ``layer.2`` in the decoder). T5's decoder
# cross-attention gets no adapter, as in the authors' runs (self-attention and feed-forward only).
ADAPTER_SITES: dict[str, tuple[str, ...]] = {
    "t5": ("layer.0.SelfAttention.o", "layer.*.DenseReluDense.wo"),
    "bert": ("attention.output.dense", "output.dense"),
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
    # BART (Table 2's backbone): self-attention and feed-forward outputs; no adapter on decoder cross-attention
    "bart": ("self_attn.out_proj", "fc2"),
}


class Adapter(nn.Module):
    """A bottleneck adapter with a residual connection; it starts as the identity because ``up`` is zero.

    Args:
        dim: the hidden size d of the stream it is applied to.
        bottleneck: the inner size, d / reduction.
        like: a tensor whose device and dtype the new parameters take (parameters are created there directly,
            without ``Module.to``, so that building works under a FakeTensorMode too).
    """

    def __init__(self, dim: int, bottleneck: int, like: torch.Tensor):
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.down = nn.Linear(dim, bottleneck, **factory)
        self.up = nn.Linear(bottleneck, dim, **factory)
        # Zero up-projection: adding adapters leaves the backbone's function unchanged at step 0.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))  # (..., d)


def _apply_adapter(module: nn.Module, args, output):
    # Forward hook: the projection's output goes through its adapter. Projections return a plain tensor.
    return module.adapter(output)


def adapter_sites(layer: nn.Module, model_type: str) -> list[str]:
    """The names (relative to ``layer``) of the output projections that get an adapter.

    Raises:
        ConfigError: the model type has no entry in :data:`ADAPTER_SITES`, or a site does not match exactly one
            module of the layer (the table does not fit this version of the model).
    """
    if model_type not in ADAPTER_SITES:
        raise ConfigError(
            f"adapters are not defined for model type {model_type!r}; supported: {', '.join(ADAPTER_SITES)}"
        )
    names = [name for name, _ in layer.named_modules() if name]
    found = []
    for pattern in ADAPTER_SITES[model_type]:
        hits = fnmatch.filter(names, pattern)
        if len(hits) != 1:
            raise ConfigError(
                f"adapter site {pattern!r} matches {len(hits)} modules in a {model_type} layer, expected 1"
            )
        found.append(hits[0])
    return found


def add_adapters(layers: list[nn.Module], model_type: str, hidden_size: int, reduction: int) -> list[Adapter]:
    """Insert an adapter after the attention output and after the feed-forward output of every given layer.

    Args:
        layers: the backbone's layer modules to equip (layers left out, e.g. frozen ones, get none).
        model_type: the backbone's ``config.model_type``, a key of :data:`ADAPTER_SITES`.
        hidden_size: the backbone's hidden size d.
        reduction: the bottleneck is ``hidden_size // reduction`` wide.

    Returns:
        The inserted adapters, in layer order. Their parameters require grad; nothing else is changed.

    Raises:
        ConfigError: unsupported model type, a bottleneck of width 0, or adapters already present.
    """
    bottleneck = hidden_size // reduction
    if bottleneck < 1:
        raise ConfigError(f"adapter_reduction={reduction} leaves no bottleneck for hidden size {hidden_size}")
    added = []
    for layer in layers:
        for name in adapter_sites(layer, model_type):
            proj = layer.get_submodule(name)
            if hasattr(proj, "adapter"):
                raise ConfigError("the backbone already has adapters; prepare a fresh backbone")
            proj.adapter = Adapter(hidden_size, bottleneck, like=next(proj.parameters()))
            proj.register_forward_hook(_apply_adapter)
            added.append(proj.adapter)
    return added
