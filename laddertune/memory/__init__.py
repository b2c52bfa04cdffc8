"""Training memory: measured and predicted.

:class:`PeakMemoryMeter` measures a phase's peak (CUDA's allocator counters, or the CPU profiler);
:func:`predict_memory` traces two training steps on fake tensors for any config and method, without weights;
:mod:`.model_configs` holds the built-in configs of the paper's backbones (T5, BART, Llama-7B) for it.
"""

from .meter import GIB, MemoryReport, PeakMemoryMeter, format_gib
from .model_configs import PAPER_SIDE_LAYERS, load_config
from .predict import MemoryPrediction, predict_memory

__all__ = [
    "GIB",
    "PAPER_SIDE_LAYERS",
    "MemoryPrediction",
    "MemoryReport",
    "PeakMemoryMeter",
    "format_gib",
    "load_config",
    "predict_memory",
]
