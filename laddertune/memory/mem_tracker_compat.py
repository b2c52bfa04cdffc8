"""torch's private MemTracker (``torch.distributed._tools.mem_tracker``), behind one check.

The memory predictor (:mod:`.predict`) counts the storages of a FakeTensor trace with a MemTracker subclass
(:func:`mem_tracker_class`) that overrides two private methods and reads private state, and the CUDA emulation
(:func:`.trace_emulation.cuda_block_rounding`) patches ``_WeakRefInfo``. None of it is public API, so this is the
only module that imports it: :func:`mem_tracker_api` checks that the installed torch has every name and signature
the predictor relies on and otherwise raises a one-line :class:`~laddertune.errors.ConfigError` naming the torch
releases it was tested with. Only the predictor (``laddertune memory``, ``predict_memory``) is refused; training
never imports this module. The tested releases and how: ``benchmarks/results/dependency_ranges.md``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass

import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)

TESTED_TORCH = ((2, 6), (2, 15))
"""The oldest and newest torch minor releases the predictor's tests passed on (tests/test_memory.py)."""
TESTED = f"torch {TESTED_TORCH[0][0]}.{TESTED_TORCH[0][1]} to {TESTED_TORCH[1][0]}.{TESTED_TORCH[1][1]}"

_REF_TYPES = {"PARAM", "BUFFER", "GRAD", "ACT", "TEMP", "OPT", "OTH"}  # MemTracker's categories, by name
_STATE = ("_WINFO", "_curr_mem_snap", "_peak_mem", "_peak_mem_snap", "_param_to_grad_hook_handles")
_SIGNATURES = {  # the private methods the subclass overrides, with the parameters it defines them with
    "_track_module_params_and_buffers": ["self", "module", "install_grad_hooks"],
    "_update_peak_stats": ["self", "peak_state"],
}
_CALLED = ("_update_and_maybe_create_winfos", "track_external", "get_tracker_snapshot")


@dataclass(frozen=True)
class MemTrackerAPI:
    """The private names of ``torch.distributed._tools.mem_tracker`` that the predictor uses."""

    MemTracker: type
    MemRefType: type
    WeakRefInfo: type
    TOTAL_KEY: str


def torch_minor(version: str = torch.__version__) -> tuple[int, int]:
    """``"2.13.0+cpu"`` -> ``(2, 13)``."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def api_problem() -> str | None:
    """What the installed torch's MemTracker lacks of what the predictor relies on; None when nothing."""
    try:
        from torch.distributed._tools import mem_tracker as mt
    except ImportError as e:
        return f"has no torch.distributed._tools.mem_tracker ({e})"
    for name in ("MemTracker", "_MemRefType", "_WeakRefInfo", "_TOTAL_KEY"):
        if not hasattr(mt, name):
            return f"has no mem_tracker.{name}"
    if {m.name for m in mt._MemRefType} != _REF_TYPES:
        return f"has other MemTracker categories ({', '.join(sorted(m.name for m in mt._MemRefType))})"
    if mt._TOTAL_KEY != "Total":
        return f"names MemTracker's total {mt._TOTAL_KEY!r}"
    for name, params in _SIGNATURES.items():
        found = getattr(mt.MemTracker, name, None)
        if found is None or list(inspect.signature(found).parameters) != params:
            return f"has another MemTracker.{name}"
    for name in _CALLED:
        if not callable(getattr(mt.MemTracker, name, None)):
            return f"has no MemTracker.{name}"
    if not callable(getattr(mt._WeakRefInfo, "_calculate_mem_consumed", None)):
        return "has no _WeakRefInfo._calculate_mem_consumed"
    try:
        tracker = mt.MemTracker()
    except Exception as e:  # whatever a changed constructor raises
        return f"cannot build a MemTracker ({type(e).__name__}: {e})"
    missing = [name for name in _STATE if not hasattr(tracker, name)]
    return f"has a MemTracker without {', '.join(missing)}" if missing else None


@functools.cache
def mem_tracker_api() -> MemTrackerAPI:
    """The checked private API (cached); warns once on a torch newer or older than the tested ones.

    Raises:
        ConfigError: the installed torch's MemTracker differs from what the predictor relies on.
    """
    problem = api_problem()
    if problem is not None:
        raise ConfigError(
            f"the memory predictor needs torch's private MemTracker as in {TESTED}; "
            f"torch {torch.__version__} {problem} (training is not affected)"
        )
    if not TESTED_TORCH[0] <= torch_minor() <= TESTED_TORCH[1]:
        logger.warning(
            "memory predictor: torch %s was not tested (tested: %s); its MemTracker has the expected API",
            torch.__version__,
            TESTED,
        )
    from torch.distributed._tools import mem_tracker as mt

    return MemTrackerAPI(mt.MemTracker, mt._MemRefType, mt._WeakRefInfo, mt._TOTAL_KEY)


def mem_tracker_class():
    """A MemTracker fit for frozen backbones (a subclass of torch's private one).

    - grad hooks on trainable parameters only: the stock tracker hooks every parameter and fails on frozen ones;
    - only the global peak is kept up to date (the stock tracker also updates every module's peak after every op,
      which dominates the trace of a 3B model);
    - ``add_taps(tensors)`` marks storages (LST's ladder inputs) whose bytes are then reported at the peak
      (``taps_at_peak``) and in total (``all_taps_bytes``).

    Used by :mod:`laddertune.memory.predict` on fake tensors; it also works on real ones (one iteration per
    tracker). The class is built on first use so that importing this module does not import torch.distributed.

    Raises:
        ConfigError: the installed torch's MemTracker differs (:func:`mem_tracker_api`).
    """
    from torch.utils.weak import WeakIdKeyDictionary

    api = mem_tracker_api()
    ref_type, total_key = api.MemRefType, api.TOTAL_KEY

    class Tracker(api.MemTracker):
        def __init__(self):
            super().__init__()
            self.taps = WeakIdKeyDictionary()  # storages of the ladder taps (inputs of the down-projections)
            self.taps_at_peak = 0  # bytes of the taps alive at the peak
            self.all_taps_bytes = 0  # bytes of every tap seen in this iteration
            self.final_optimizer_bytes = 0

        def add_taps(self, tensors) -> None:
            for t in tensors:
                if not isinstance(t, torch.Tensor):
                    continue
                st = t.untyped_storage()
                if st not in self.taps and st in self._WINFO:
                    self.taps[st] = True
                    self.all_taps_bytes += self._WINFO[st][0].mem_consumed

        def tap_bytes(self) -> int:
            return sum(self._WINFO[st][0].mem_consumed for st in list(self.taps.keys()) if st in self._WINFO)

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            # The stock version hooks every parameter and fails on frozen ones ("cannot register a hook on a
            # tensor that doesn't require gradient").
            def grad_hook(grad):
                self._update_and_maybe_create_winfos(grad, ref_type.GRAD)

            param_memory = buffer_memory = 0
            for param in module.parameters():
                winfos = self._update_and_maybe_create_winfos(param, ref_type.PARAM)
                param_memory += sum(w.mem_consumed for w in winfos)
                if param.grad is not None:
                    self._update_and_maybe_create_winfos(param.grad, ref_type.GRAD)
                if (
                    install_grad_hooks
                    and param.requires_grad
                    and param not in self._param_to_grad_hook_handles
                ):
                    self._param_to_grad_hook_handles[param] = (
                        param.register_hook(grad_hook),
                        param.register_post_accumulate_grad_hook(lambda p: grad_hook(p.grad)),
                    )
            for buffer in module.buffers():
                winfos = self._update_and_maybe_create_winfos(buffer, ref_type.BUFFER)
                buffer_memory += sum(w.mem_consumed for w in winfos)
            return param_memory, buffer_memory

        def _update_peak_stats(self, peak_state):
            # Called after every op. The stock version also updates every module's own peak (a loop over all
            # modules per op, which dominates the trace of a 3B model); we need the global peak only.
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[total_key]:
                    self._peak_mem[dev] = snap[total_key]
                    self._peak_mem_snap[dev] = dict(snap)
                    self.taps_at_peak = self.tap_bytes()

    return Tracker
