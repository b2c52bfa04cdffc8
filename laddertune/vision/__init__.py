"""Vision and language: CLIP-T5 with LST, where image features enter the side network only (paper §4, Table 3).

:class:`VisionLadderModel` composes the core :class:`~laddertune.core.LadderModel` (a frozen T5 that reads the text
ids alone) with trainable visual embeddings (:mod:`.visual_embedding`) concatenated to the side encoder's input;
:mod:`.features` extracts image grid features once with a frozen vision encoder into HDF5 keyed by image id
(VL-T5 / VL-Adapter's layout); :mod:`.tasks` holds the VQA / GQA / NLVR2 / captioning prompts, data layouts and
metrics. It sits above core and data, below memory and training.
"""

from .model import PAPER_LADDER, VisionLadderModel
from .visual_embedding import VisualConfig, VisualEmbedding, grid_boxes

__all__ = ["PAPER_LADDER", "VisionLadderModel", "VisualConfig", "VisualEmbedding", "grid_boxes"]
