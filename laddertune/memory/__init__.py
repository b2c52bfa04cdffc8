"""Training memory: measured and predicted.

:class:`PeakMemoryMeter` measures a phase's peak (CUDA's allocator counters, or the CPU profiler);
:func:`predict_memory` traces two training steps on fake tensors for any config and method, without weights;
:mod:`.model_configs` holds the built-in configs of the paper's backbones (T5, BART, Llama-7B) for it.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "GIB": ".meter",
    "MemoryReport": ".meter",
    "PeakMemoryMeter": ".meter",
    "format_gib": ".meter",
    "PAPER_SIDE_LAYERS": ".model_configs",
    "load_config": ".model_configs",
    "MemoryPrediction": ".predict",
    "predict_memory": ".predict",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
