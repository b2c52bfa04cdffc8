"""Rows grouped into table rows: mean and standard deviation over seeds per task, the GLUE-style average, costs."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from .rows import Row

# GLUE's tasks in the paper's order; other tasks follow in alphabetical order.
TASK_ORDER = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE"}  # fmt: skip
# The paper's Table 1 order: the baselines, then LST and its ablations.
METHOD_ORDER = ("full", "adapter", "lora", "bitfit", "prompt", "qlora", "lst", "side-tuning", "pruned")


@dataclass(frozen=True)
class Stat:
    """A mean with its sample standard deviation over ``n`` values (0.0 for a single value)."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        """``82.00 ± 1.23``, or ``82.00`` for a single value (no spread to show)."""
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def stat(values: list[float]) -> Stat:
    """The :class:`Stat` of ``values`` (at least one)."""
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


@dataclass(frozen=True)
class Group:
    """The runs of one table row (a method, a sweep point, a bar) over the tasks and seeds."""

    key: tuple
    rows: tuple[Row, ...]
    tasks: dict[str, Stat]
    """Per task: the mean and standard deviation of the score over seeds."""
    average: Stat | None
    """GLUE-style: the mean over ``tasks`` of the per-task means (None unless the group has every task); its std
    is that of the per-seed averages over the seeds that have every task."""
    peak_train_gib: float | None
    """Mean peak training memory over the measured runs."""
    seconds_per_step: float | None
    trainable_percent: float | None

    def to_dict(self, names: tuple[str, ...]) -> dict:
        return {
            **dict(zip(names, self.key, strict=True)),
            "tasks": {t: s.to_dict() for t, s in self.tasks.items()},
            "average": None if self.average is None else self.average.to_dict(),
            "peak_train_gib": self.peak_train_gib,
            "seconds_per_step": self.seconds_per_step,
            "trainable_percent": self.trainable_percent,
            "runs": len(self.rows),
        }


def ordered_tasks(rows: list[Row]) -> list[str]:
    """The tasks of ``rows``: GLUE's in the paper's order, then the others alphabetically."""
    found = {r.task for r in rows}
    return [t for t in TASK_ORDER if t in found] + sorted(found - set(TASK_ORDER))


def method_rank(method: str) -> tuple[int, str]:
    """Sort key of a method or label: the paper's order, unknown names last."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def summarize(rows: list[Row], key: Callable[[Row], tuple], tasks: list[str] | None = None) -> list[Group]:
    """Group ``rows`` by ``key`` (in first-seen order) and reduce each group over seeds."""
    tasks = tasks or ordered_tasks(rows)
    by_key: dict[tuple, list[Row]] = {}
    for row in rows:
        by_key.setdefault(key(row), []).append(row)
    return [_group(k, members, tasks) for k, members in by_key.items()]


def _group(key: tuple, rows: list[Row], tasks: list[str]) -> Group:
    per_task = {
        t: stat([r.score for r in rows if r.task == t]) for t in tasks if any(r.task == t for r in rows)
    }
    average = None
    if len(per_task) == len(tasks):
        seeds = sorted({r.seed for r in rows})
        per_seed = []
        for seed in seeds:
            scores = {t: [r.score for r in rows if r.task == t and r.seed == seed] for t in tasks}
            if all(scores.values()):  # this seed has every task: its own GLUE-style average
                per_seed.append(statistics.fmean(statistics.fmean(v) for v in scores.values()))
        mean = statistics.fmean(s.mean for s in per_task.values())
        spread = stat(per_seed) if per_seed else Stat(mean, 0.0, 1)
        average = Stat(mean, spread.std, spread.n)
    return Group(
        key=key,
        rows=tuple(rows),
        tasks=per_task,
        average=average,
        peak_train_gib=_mean(r.peak_train_gib for r in rows),
        seconds_per_step=_mean(r.seconds_per_step for r in rows),
        trainable_percent=_mean(r.trainable_percent for r in rows),
    )


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None
