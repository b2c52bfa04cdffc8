"""What a run has done and measured, as typed objects: :class:`RunState` (saved in every ``checkpoint-last`` and
restored on resume) and :class:`Timing` (this process's step times, reported in ``results.json``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

from ..errors import CheckpointError


@dataclass
class RunState:
    """Where a run is: the progress a resumed run continues from, and what it has scored so far."""

    step: int = 0
    """Optimizer steps done (global steps under data parallelism)."""
    epoch: int = 0
    """The epoch in progress (0-based); the run continues in it."""
    next_batch: int = 0
    """The batch of ``epoch`` to run next (a micro-batch index: the first of a step)."""
    best: dict | None = None
    """The best validation so far: ``{"epoch", "step", "score", "metrics"}``."""
    history: list[dict] = field(default_factory=list)
    """Every validation record so far, in order."""
    train_seconds: float = 0.0
    """Seconds spent in training steps, over resumes too."""
    grad_scaler: dict | None = None
    """fp16: the gradient scaler's state (the loss scale resumes where it was)."""
    data_fingerprint: str | None = None
    """A hash of the run's training and validation examples: a resumed run must see the same data."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "trainer_state.json") -> RunState:
        """The state a checkpoint recorded (its other keys, the optimizer's and the RNG's, are ignored here)."""
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        for name in ("step", "epoch", "next_batch"):
            value = getattr(state, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheckpointError(f"{where}: {name} must be a non-negative integer, got {value!r}")
        return state


@dataclass
class Timing:
    """What this process measured of the run's speed (a resumed run counts from its restart)."""

    started: float = field(default_factory=time.perf_counter)
    """``time.perf_counter()`` when the run started in this process."""
    process_steps: int = 0
    """Steps this process ran."""
    timed_steps: int = 0
    """Steps that count for ``seconds_per_step``: neither the first (warm-up) nor a memory-measured one."""
    timed_seconds: float = 0.0
    """Their seconds."""
    last_seconds: float = 0.0
    """The last step's seconds."""
    resumed: bool = False
    """The run continued from a checkpoint."""

    @property
    def seconds_per_step(self) -> float | None:
        return self.timed_seconds / self.timed_steps if self.timed_steps else None
