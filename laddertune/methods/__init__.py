"""Training methods as objects: LST and its ablations, the paper's baselines and QLoRA.

:func:`method_spec` (what a method is: options class, summary, capabilities; no torch import) and
:func:`get_method` (the object that builds, saves, loads and describes it) by name; :func:`method_names` lists them.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "MethodSpec": ".registry",
    "get_method": ".registry",
    "method_names": ".registry",
    "method_spec": ".registry",
    "register": ".registry",
    "TrainingMethod": ".base",
    "prepare_qlora": ".qlora",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
