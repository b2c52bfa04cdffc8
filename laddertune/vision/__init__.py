"""Vision and language: CLIP-T5 with LST, where image features enter the side network only (paper §4, Table 3).

:class:`VisionLadderModel` composes the core :class:`~laddertune.core.LadderModel` (a frozen T5 that reads the text
ids alone) with trainable visual embeddings (:mod:`.visual_embedding`) concatenated to the side encoder's input;
:mod:`.features` extracts image grid features once with a frozen vision encoder into HDF5 keyed by image id
(VL-T5 / VL-Adapter's layout); :mod:`.tasks` holds the VQA / GQA / NLVR2 / captioning prompts, data layouts and
metrics. It sits above core and data, below memory and training.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "PAPER_LADDER": ".model",
    "VisionLadderModel": ".model",
    "VisualConfig": ".visual_embedding",
    "VisualEmbedding": ".visual_embedding",
    "grid_boxes": ".visual_embedding",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
