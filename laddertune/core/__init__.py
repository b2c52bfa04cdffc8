"""The side network and what it needs to exist.

:class:`LadderConfig`, the per-family knowledge (:mod:`.architectures`), loading backbones by alias or path
(:mod:`.backbones`), the side stacks and their ladders (:mod:`.side_network`), :class:`LadderModel` (an unmodified
frozen backbone next to the side network), the backbone half of its forward (:mod:`.taps`), many named side
networks on one backbone (:class:`MultiSideModel`), generation with both caches, and side-only checkpoints.
"""

from .architectures import FAMILIES
from .cache import LadderCache
from .config import LadderConfig
from .model import LadderModel, get_ladder_model
from .multi_side import MultiSideModel

__all__ = ["FAMILIES", "LadderCache", "LadderConfig", "LadderModel", "MultiSideModel", "get_ladder_model"]
