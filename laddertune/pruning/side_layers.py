"""Which backbone layers get a side layer: even layer dropping (LST §3.4, Figure 6) and the paper's lists."""

from __future__ import annotations

from ..errors import ConfigError


def interleaved_drop(num_layers: int, n_drop: int, stride: int = 4) -> list[int]:
    """Kept layer ids after dropping ``n_drop`` of ``num_layers`` layers, spread evenly (paper Figure 6).

    Layers are dropped in rounds over blocks of ``stride`` layers: first the first layer of every block
    (0, 4, 8, ...), then the second (1, 5, 9, ...), and so on. Counts are per stack: the paper's Figure 6 counts
    both T5 stacks, so its 6 / 12 / 18 dropped layers of t5-base are ``n_drop`` = 3 / 6 / 9 here, keeping
    [1,2,3,5,6,7,9,10,11], [2,3,6,7,10,11] and [3,7,11]. ``stride=2`` drops every other layer first (keeping
    1, 3, 5, ... at half, as §3.4 and t5-large do).
    """
    if not 0 <= n_drop < num_layers:
        raise ConfigError(f"can drop 0 to {num_layers - 1} of {num_layers} layers, not {n_drop}")
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    order = sorted(range(num_layers), key=lambda i: (i % stride, i))
    return sorted(order[n_drop:])


# name -> (layers per stack, kept side layers), docs/concepts.md#fact-kept-side-layers
PAPER_SIDE_LAYERS = {
    "t5-base": (12, interleaved_drop(12, 3)),  # Table 1: 1,2,3,5,6,7,9,10,11
    "t5-large": (24, interleaved_drop(24, 12, stride=2)),  # the 12 odd layers 1..23
    "t5-3b": (24, interleaved_drop(24, 23)),  # [23]
}


def paper_side_layers(model_type_or_size: str, num_layers: int) -> list[int]:
    """The side layers the paper kept for a backbone (the same list in the encoder and the decoder).

    Args:
        model_type_or_size: ``"t5-base"``, ``"t5-large"``, ``"t5-3b"`` (a hub id such as ``google-t5/t5-base``
            works too). Any other backbone (BART, the vision-language runs, anything new) keeps all its layers.
        num_layers: layers per stack of the backbone, checked against the paper's model.

    Raises:
        ConfigError: a paper model name with a layer count that is not that model's.
    """
    name = model_type_or_size.rstrip("/").split("/")[-1].lower()
    if name not in PAPER_SIDE_LAYERS:
        return list(range(num_layers))
    expected, kept = PAPER_SIDE_LAYERS[name]
    if num_layers != expected:
        raise ConfigError(f"{name} has {expected} layers per stack, not {num_layers}")
    return list(kept)
