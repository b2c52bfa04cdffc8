"""The generation cache of a LadderModel: the backbone's key/value cache and the side network's, side by side."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LadderCache:
    """Key/value caches for generation: the backbone's and the side network's, kept side by side."""

    backbone: object = None
    side: object = None

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search); both caches move together, or the side reads the wrong beam."""
        for cache in (self.backbone, self.side):
            if cache is not None:
                cache.reorder_cache(index)
