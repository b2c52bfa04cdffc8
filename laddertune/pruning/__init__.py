"""Structural initialisation of the side network from the backbone (LST §3.3) and layer dropping (§3.4).

Importance scores (weight magnitude, empirical Fisher), the selection of the rows and columns each side matrix
copies from its backbone matrix, and the lists of backbone layers that get a side layer. It reads the models it is
given; it knows nothing of how the side network is built.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "fisher_importance": ".importance",
    "magnitude_importance": ".importance",
    "PAPER_SIDE_LAYERS": ".side_layers",
    "interleaved_drop": ".side_layers",
    "paper_side_layers": ".side_layers",
    "CHAINS": ".structure",
    "initialize_from_backbone": ".structure",
    "initialize_side": ".structure",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
