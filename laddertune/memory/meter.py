"""Measure the peak memory of training steps: one meter, used by every command.

Usage (the training loop)::

    meter = PeakMemoryMeter()            # or PeakMemoryMeter(model, optimizer): see "CPU baseline" below
    train_step(batch0)                   # warm-up step OUTSIDE the meter: creates the optimizer state
    with meter.phase("train"):
        for batch in first_k_batches:    # measure K steps (2-5), not the whole run
            train_step(batch)
    with meter.phase("eval"):
        evaluate(...)
    report = meter.report()              # MemoryReport; report.to_dict() goes into the results JSON
    print(format_gib(report.peak("train")))

Each phase records the ABSOLUTE peak of live tensor bytes during the phase (what was live at its start included),
so phases are kept apart: a Fisher "init" phase never leaks into the "train" number, unlike the paper, which read
``max_memory_allocated`` once over the whole run (Fisher included). A phase entered twice keeps the larger peak.

How it measures:

- CUDA: ``torch.cuda.reset_peak_memory_stats()`` at the phase start, ``max_memory_allocated()`` (the peak, the
  paper's metric) and ``max_memory_reserved()`` (the allocator's cache too) at the end. No overhead.
- CPU: the CPU allocator's own counter, read through ``torch.profiler`` with ``profile_memory=True``: every
  allocation and free inside the window is an event in the trace, so the peak includes tensors that Python never
  sees (autograd's saved tensors, temporaries inside kernels). Peak = bytes live at the window start + the largest
  running sum of the window's allocations and frees. The profiler records every op, which costs a few percent of
  step time plus the trace in RAM: wrap K steps, not a whole run. Kineto's own stderr lines are silenced
  (``KINETO_LOG_LEVEL``, unless set). What the profiled steps cost is in results.json (``memory.measurement``).

Why the profiler and not MemTracker (``torch.distributed._tools``) on real tensors: it reads the allocator, not
the tensors a Python dispatch mode happens to see; it is public API; and it spans K steps, while one MemTracker
can trace only one iteration. The FakeTensor predictor (``memory/predict.py``) uses MemTracker because there is no
allocator under fake tensors; the test suite checks that the two agree within 2%.

The MemTracker subclass with which :mod:`laddertune.memory.predict` counts the memory of a FakeTensor trace is in
:mod:`.mem_tracker_compat`, with the check of torch's private API it relies on.

CPU baseline: the allocator cannot tell what was live before the window, so the meter adds it up itself, once per
phase: every live CPU tensor found by the garbage collector (plus ``.grad`` of each), each storage counted once;
or, when the meter was given roots (modules, optimizers, tensors), only what those roots hold (parameters,
buffers, gradients, optimizer state), which leaves out unrelated tensors (a dataset held in RAM) that a GPU would
not count either. The profiler does not report frees of blocks allocated before the window, so each baseline
storage gets a weak reference whose callback drops a marker event into the trace when it dies: the running sum
then subtracts it at the right place.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch

logger = logging.getLogger(__name__)

GIB = 1024**3
_FREE_MARKER = "laddertune::pre_window_free#"


def format_gib(nbytes: int | float | None, digits: int = 2) -> str:
    """The one memory formatter of the library: bytes as ``"14.49 GiB"`` (1 GiB = 1024**3 bytes)."""
    if nbytes is None:
        return "n/a"
    return f"{nbytes / GIB:.{digits}f} GiB"


@dataclass
class PhasePeak:
    """The memory of one phase (all sizes in bytes)."""

    peak_bytes: int
    """Absolute peak of live tensor bytes during the phase (CUDA: ``max_memory_allocated``)."""
    start_bytes: int
    """Live tensor bytes at the start of the phase (of the entry with the largest peak)."""
    reserved_bytes: int | None = None
    """CUDA only: peak of the caching allocator's reserved memory (``max_memory_reserved``); None on CPU."""
    seconds: float = 0.0
    """Wall time spent inside the phase (all entries together)."""
    entries: int = 0
    """How many times the phase was entered; the peak is the largest of them."""


@dataclass
class MemoryReport:
    """Peak memory per phase, with how it was measured."""

    device: str
    """``cuda:0`` or ``cpu``."""
    method: str
    """``cuda.max_memory_allocated`` or ``cpu.profiler`` (see the module docstring)."""
    torch_version: str
    phases: dict[str, PhasePeak] = field(default_factory=dict)

    def peak(self, phase: str) -> int:
        """Peak bytes of one phase; KeyError if the phase never ran."""
        return self.phases[phase].peak_bytes

    def to_dict(self) -> dict:
        """JSON-ready dict; each phase also carries ``peak_gib`` for people reading the file."""
        out = asdict(self)
        for name, ph in self.phases.items():
            out["phases"][name]["peak_gib"] = round(ph.peak_bytes / GIB, 4)
        return out

    def summary(self) -> str:
        """One line: ``train 3.87 GiB, eval 1.20 GiB (cpu.profiler)``."""
        parts = [f"{name} {format_gib(ph.peak_bytes)}" for name, ph in self.phases.items()]
        return f"{', '.join(parts) or 'no phases'} ({self.method})"


def _storage_key(t: torch.Tensor):
    st = t.untyped_storage()
    return st, (st.data_ptr(), st.nbytes())


def _is_plain_cpu_tensor(t) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return (
        isinstance(t, torch.Tensor)
        and not isinstance(t, FakeTensor)
        and t.device.type == "cpu"
        and t.layout == torch.strided
    )


def _tensors_of(roots: Iterable) -> Iterator[torch.Tensor]:
    """Tensors held by roots: modules (params, buffers, grads), optimizers (state), tensors, containers."""
    for obj in roots:
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                yield p
                if p.grad is not None:
                    yield p.grad
            yield from obj.buffers()
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                yield from _tensors_of(state.values())
        elif isinstance(obj, torch.Tensor):
            yield obj
            if obj.grad is not None:
                yield obj.grad
        elif isinstance(obj, dict):
            yield from _tensors_of(obj.values())
        elif isinstance(obj, list | tuple):
            yield from _tensors_of(obj)


def _flatten(roots: Iterable) -> Iterator:
    """Modules, optimizers and tensors inside (nested) dicts, lists and tuples."""
    for obj in roots:
        if isinstance(obj, dict):
            yield from _flatten(obj.values())
        elif isinstance(obj, list | tuple):
            yield from _flatten(obj)
        elif isinstance(obj, torch.nn.Module | torch.optim.Optimizer | torch.Tensor):
            yield obj
        else:
            raise TypeError(
                f"PeakMemoryMeter roots are modules, optimizers and tensors, not {type(obj).__name__}"
            )


def _grad_of(t: torch.Tensor) -> torch.Tensor | None:
    try:
        return t.grad
    except RuntimeError:  # an undefined tensor (torch 2.6 keeps some in the heap) has no autograd metadata
        return None


def live_cpu_storages(roots: Iterable | None = None) -> dict:
    """Live CPU storages, each once: ``{(data_ptr, nbytes): UntypedStorage}``.

    Args:
        roots: modules, optimizers, tensors or containers of them; None scans every tensor the garbage collector
            knows (and each one's ``.grad``, which lives in C++ until first accessed).
    """
    if roots is None:
        gc.collect()
        with warnings.catch_warnings():  # isinstance() on some modules' deprecated attributes warns
            warnings.simplefilter("ignore")
            found = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
        found += [g for g in map(_grad_of, found) if g is not None]
    else:
        found = list(_tensors_of(roots))
    storages = {}
    for t in found:
        if not _is_plain_cpu_tensor(t):
            continue
        try:
            st, key = _storage_key(t)
        except (RuntimeError, NotImplementedError):  # tensors without a storage
            continue
        if key[1] > 0:
            storages[key] = st
    return storages


class PeakMemoryMeter:
    """Peak memory of named phases of a run, on CUDA or CPU (see the module docstring).

    Args:
        *roots: optional modules, optimizers and tensors (or dicts/lists of them, such as a batch) whose memory is
            the CPU baseline (default: every live CPU tensor). Held by weak reference. Ignored on CUDA, where the
            allocator knows what is live.
        device: where the work runs; default ``cuda`` when available, else ``cpu``.
    """

    def __init__(self, *roots, device: str | torch.device | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"PeakMemoryMeter supports cuda and cpu, not {self.device.type}")
        # Weak references: the meter must not keep a tensor (or a model) alive that the loop lets go of.
        self._roots = [weakref.ref(obj) for obj in _flatten(roots)] if roots else None
        self._phases: dict[str, PhasePeak] = {}
        self._active: str | None = None

    def report(self) -> MemoryReport:
        """The phases measured so far."""
        return MemoryReport(
            device=str(self.device),
            method=self.method,
            torch_version=torch.__version__,
            phases={k: PhasePeak(**asdict(v)) for k, v in self._phases.items()},
        )

    @property
    def method(self) -> str:
        return "cuda.max_memory_allocated" if self.device.type == "cuda" else "cpu.profiler"

    @contextlib.contextmanager
    def phase(self, name: str):
        """Measure the peak of the code inside the ``with`` block under the phase ``name``."""
        if self._active is not None:
            raise RuntimeError(f"phase {name!r} started inside phase {self._active!r}; phases do not nest")
        self._active = name
        t0 = time.perf_counter()
        try:
            if self.device.type == "cuda":
                with self._cuda_window() as result:
                    yield
            else:
                with self._cpu_window() as result:
                    yield
        finally:
            self._active = None
        peak, start, reserved = result
        ph = self._phases.setdefault(
            name, PhasePeak(peak_bytes=0, start_bytes=start, reserved_bytes=reserved)
        )
        if peak > ph.peak_bytes:
            ph.peak_bytes, ph.start_bytes = peak, start
        if reserved is not None:
            ph.reserved_bytes = max(ph.reserved_bytes or 0, reserved)
        ph.seconds += time.perf_counter() - t0
        ph.entries += 1
        logger.info("memory: phase %s peak %s", name, format_gib(peak))

    @contextlib.contextmanager
    def _cuda_window(self):
        result = []
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        start = torch.cuda.memory_allocated(self.device)
        yield result
        torch.cuda.synchronize(self.device)
        result += [
            torch.cuda.max_memory_allocated(self.device),
            start,
            torch.cuda.max_memory_reserved(self.device),
        ]

    @contextlib.contextmanager
    def _cpu_window(self):
        from torch.profiler import ProfilerActivity, profile, record_function

        result = []
        roots = None if self._roots is None else [o for o in (ref() for ref in self._roots) if o is not None]
        storages = live_cpu_storages(roots)
        del roots  # hold nothing during the window
        sizes = [key[1] for key in storages]
        start = sum(sizes)

        def on_free(i, _ref):
            with record_function(f"{_FREE_MARKER}{i}"):
                pass

        # the weak references (and so their callbacks) live exactly as long as this window
        refs = [weakref.ref(st, lambda r, i=i: on_free(i, r)) for i, st in enumerate(storages.values())]
        del storages
        # Kineto prints "USDT ... profiler_start/stop" (and "STAGE ...") lines to stderr for every window unless
        # its log level is raised; it reads the level when a profiler starts. The user's own setting wins.
        os.environ.setdefault("KINETO_LOG_LEVEL", "99")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            yield result
        del refs
        result += [start + _max_running_sum(prof, sizes), start, None]


def _max_running_sum(prof, pre_window_sizes: list[int]) -> int:
    """Largest running total of the trace's allocations (+), frees (-) and pre-window frees (markers)."""
    events = []
    for e in prof.profiler.kineto_results.events():
        name = e.name()
        if name == "[memory]":
            if e.device_type() == torch.autograd.DeviceType.CPU:
                events.append((e.start_ns(), e.nbytes()))
        elif name.startswith(_FREE_MARKER):
            events.append((e.start_ns(), -pre_window_sizes[int(name[len(_FREE_MARKER) :])]))
    events.sort(key=lambda x: x[0])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak
