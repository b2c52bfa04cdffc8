"""laddertune: Ladder Side-Tuning (Sung, Cho and Bansal, NeurIPS 2022) over any Hugging Face backbone.

>>> from laddertune import LadderConfig, get_ladder_model
>>> model = get_ladder_model(backbone, LadderConfig(reduction_factor=8))
>>> model.print_trainable_parameters()
"""

from .core import FAMILIES, LadderCache, LadderConfig, LadderModel, MultiSideModel, get_ladder_model
from .errors import CheckpointError, ConfigError, DataError, LadderTuneError, OutputError

__version__ = "0.1.0"
__all__ = [
    "FAMILIES",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LadderCache",
    "LadderConfig",
    "LadderModel",
    "LadderTuneError",
    "OutputError",
    "MultiSideModel",
    "get_ladder_model",
]
