"""Structural initialisation of the side network from the backbone (LST §3.3) and layer dropping (§3.4).

Importance scores (weight magnitude, empirical Fisher), the selection of the rows and columns each side matrix
copies from its backbone matrix, and the lists of backbone layers that get a side layer. It reads the models it is
given; it knows nothing of how the side network is built.
"""

from .importance import fisher_importance, magnitude_importance
from .side_layers import PAPER_SIDE_LAYERS, interleaved_drop, paper_side_layers
from .structure import CHAINS, initialize_from_backbone, initialize_side

__all__ = [
    "CHAINS",
    "PAPER_SIDE_LAYERS",
    "fisher_importance",
    "initialize_from_backbone",
    "initialize_side",
    "interleaved_drop",
    "magnitude_importance",
    "paper_side_layers",
]
