"""The side network and what it needs to exist.

:class:`LadderConfig`, the per-family knowledge (:mod:`.architectures`), loading backbones by alias or path
(:mod:`.backbones`), the side stacks and their ladders (:mod:`.side_network`), :class:`LadderModel` (an unmodified
frozen backbone next to the side network), the backbone half of its forward (:mod:`.taps`), many named side
networks on one backbone (:class:`MultiSideModel`), generation with both caches, and side-only checkpoints.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "FAMILIES": ".architectures",
    "LadderCache": ".cache",
    "LadderConfig": ".config",
    "LadderModel": ".model",
    "LadderModelForCausalLM": ".model",
    "LadderModelForSeq2SeqLM": ".model",
    "get_ladder_model": ".model",
    "MultiSideModel": ".multi_side",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
