"""What fits a memory budget: the longest context at a batch size, the largest batch at a context length.

``laddertune memory --fit 12GiB`` answers it for LST and QLoRA side by side. Each answer is a search over the one
size with the predictor (:func:`~laddertune.memory.predict.predict_memory` without its FLOP-counting iteration):
with SDPA's flash and memory-efficient kernels the peak grows linearly in the tokens of a step (nothing is
(T, T)), so the search fits a line through two probes, jumps to where that line meets the budget, and corrects by
the secant through the last two probes until the answer is bracketed within ``granularity``; then it checks that
the answer fits. Four to six traces, each seconds to a minute for an 8B model (fake tensors: no weights, no
data), instead of a bisection's dozen.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from ..errors import ConfigError

logger = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}
_UNITS |= {"t": 1024**4, "tib": 1024**4, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
MAX_PROBES = 8


def parse_bytes(text: str) -> int:
    """``"12GiB"``, ``"11.5g"``, ``"800MiB"``, ``"24GB"`` (decimal), or a number of bytes -> bytes.

    Not accelerate's ``convert_file_size_to_int``: it reads a lowercase ``"24gb"`` as gigabits (an eighth), and
    refuses ``"12g"`` and a plain number given as text, all of which a command line receives."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m and m.group(2).lower()
    if not m or unit not in _UNITS:
        raise ConfigError(f"a memory budget such as 12GiB, 800MiB or 24GB; got {text!r}")
    value = float(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise ConfigError(f"a memory budget must be positive, got {text!r}")
    return int(value)


@dataclass
class FitResult:
    """The largest value of one size (``source_length`` or ``batch_size``) whose predicted peak fits the budget."""

    method: str
    size: str
    """``source_length`` or ``batch_size``: what was searched."""
    value: int
    """The largest value found to fit (0: not even ``minimum``)."""
    peak_bytes: int
    """The predicted peak at ``value`` (at ``minimum`` when nothing fits)."""
    budget_bytes: int
    probes: list[tuple[int, int]] = field(default_factory=list)
    """(value, predicted peak bytes) of every trace, in order."""
    capped: bool = False
    """The search stopped at its upper limit (a position table's length, or ``maximum``) without reaching the
    budget."""

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "size": self.size,
            "value": self.value,
            "peak_bytes": self.peak_bytes,
            "peak_gib": round(self.peak_bytes / 1024**3, 3),
            "budget_bytes": self.budget_bytes,
            "capped": self.capped,
            "probes": [list(p) for p in self.probes],
        }


def largest_fit(
    peak, budget: int, *, start: int, minimum: int, maximum: int, granularity: int
) -> tuple[int, int, list[tuple[int, int]], bool]:
    """Search ``value`` in [minimum, maximum] (multiples of ``granularity``) for the largest with ``peak(value) <=
    budget``, assuming ``peak`` grows about linearly.

    Returns:
        (value or 0, its peak (or the minimum's when 0), the probes, whether ``maximum`` was reached and fits).
    """
    probes: dict[int, int] = {}

    def probe(v: int) -> int:
        v = max(minimum, min(maximum, v))
        if v not in probes:
            probes[v] = peak(v)
            logger.info("fit probe %d: %.3f GiB", v, probes[v] / 1024**3)
        return probes[v]

    def snap(v: float) -> int:
        return max(minimum, min(maximum, int(v // granularity) * granularity or minimum))

    a = snap(start)
    b = snap(max(a * 4, a + granularity))
    for _ in range(MAX_PROBES):
        fits = sorted(v for v, p in probes.items() if p <= budget)
        over = sorted(v for v, p in probes.items() if p > budget)
        lo, hi = (fits[-1] if fits else None), (over[0] if over else None)
        if lo is not None and (lo == maximum or (hi is not None and hi - lo <= granularity)):
            break
        if hi is not None and hi == minimum:
            break
        pa, pb = probe(a), probe(b)
        if pb == pa:  # flat: nothing grows with this size (a step's fixed cost)
            nxt = maximum if pb <= budget else minimum
        else:
            slope = (pb - pa) / (b - a)
            nxt = snap(b + (budget - pb) / slope)
        if nxt in probes:  # the line's answer is known: step next to it, toward the unknown side
            nxt = snap(nxt + granularity) if probes[nxt] <= budget else snap(nxt - granularity)
        if lo is not None and hi is not None and not lo < nxt < hi:
            nxt = snap((lo + hi) / 2)  # the line left the bracket: halve it
        a, b = b, nxt
        probe(b)
    fits = sorted(v for v, p in probes.items() if p <= budget)
    if not fits:
        return 0, probes.get(minimum, probe(minimum)), list(probes.items()), False
    best = fits[-1]
    return best, probes[best], list(probes.items()), best == maximum


def fit_sizes(
    backbone_config,
    method: str,
    budget: int,
    *,
    batch_size: int,
    source_length: int,
    search: str = "source_length",
    maximum: int | None = None,
    **predict_kwargs,
) -> FitResult:
    """The largest ``source_length`` (at ``batch_size``) or ``batch_size`` (at ``source_length``) of ``method``
    whose predicted steady-state peak fits ``budget`` bytes.

    Args:
        search: ``source_length`` (multiples of 256 tokens) or ``batch_size``.
        maximum: the search's upper limit (default: the backbone's position table for lengths, else 2^20 tokens;
            4096 examples).
        **predict_kwargs: :func:`~laddertune.memory.predict.predict_memory`'s other arguments.
    """
    from .model_configs import load_config, position_limit
    from .predict import predict_memory

    if search not in ("source_length", "batch_size"):
        raise ConfigError(f"search must be source_length or batch_size, got {search!r}")
    config = load_config(backbone_config) if isinstance(backbone_config, str) else backbone_config
    sizes = {"batch_size": batch_size, "source_length": source_length}

    def peak(value: int) -> int:
        kwargs = {**sizes, search: value}
        return predict_memory(config, method, count_flops=False, **kwargs, **predict_kwargs).peak_bytes

    if search == "source_length":
        limit = maximum or position_limit(config) or 2**20
        value, bytes_, probes, capped = largest_fit(
            peak, budget, start=min(2048, limit), minimum=min(256, limit), maximum=limit, granularity=256
        )
    else:
        limit = maximum or 4096
        value, bytes_, probes, capped = largest_fit(
            peak, budget, start=1, minimum=1, maximum=limit, granularity=1
        )
    return FitResult(method, search, value, bytes_, budget, probes, capped)


def format_fit(results: list[FitResult], budget: int, sizes: dict) -> str:
    """A short table: per method, the longest context and the largest batch that fit."""
    gib = budget / 1024**3
    lines = [f"fits in {gib:.3g} GiB (predicted steady-state peak):"]
    for r in results:
        at = (
            f"at batch {sizes['batch_size']}"
            if r.size == "source_length"
            else f"at {sizes['source_length']:,d} tokens"
        )
        what = "tokens" if r.size == "source_length" else "examples"
        shown = f"{r.value:,d} {what}" if r.value else "nothing"
        cap = " (the search's upper limit)" if r.capped else ""
        lines.append(
            f"  {r.method:8s} {('longest context' if r.size == 'source_length' else 'largest batch') + ' ' + at:34s}"
            f" {shown}{cap}, peak {r.peak_bytes / 1024**3:.2f} GiB ({len(r.probes)} traces)"
        )
    return "\n".join(lines)
