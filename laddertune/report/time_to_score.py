"""Time to accuracy: how long each method takes to reach full fine-tuning's dev score.

Per task of Table 1 with full fine-tuning rows that carry ``timed_scores``, the target is the mean over seeds of
full fine-tuning's best score; a run reaches it at the first evaluation whose score is at least the target. The
table gives, per method, how many seeds reached it, the mean seconds to reach it over those seeds, and the peak
training memory against full fine-tuning's; the figure plots score against wall time, a line per run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .figures import new_figure
from .rows import Row
from .summary import TASK_NAMES, method_rank, ordered_tasks

DPI = 120


def _timed(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.figure == "table1" and r.timed_scores]


def targets(rows: list[Row]) -> dict[str, float]:
    """Task -> full fine-tuning's mean best score, for the tasks whose full fine-tuning runs are timed."""
    by_task: dict[str, list[float]] = {}
    for r in _timed(rows):
        if r.method == "full":
            by_task.setdefault(r.task, []).append(r.score)
    return {task: statistics.fmean(scores) for task, scores in by_task.items()}


def seconds_to_reach(row: Row, target: float) -> float | None:
    """The wall seconds of the first evaluation of ``row`` scoring at least ``target`` (None: never)."""
    return next((t for t, score in row.timed_scores or () if score >= target - 1e-9), None)


def markdown(rows: list[Row]) -> str | None:
    """The time-to-accuracy table (None: no timed full fine-tuning rows)."""
    goal = targets(rows)
    if not goal:
        return None
    lines = [
        "### Time to full fine-tuning's score",
        "",
        "| Task | Target | Method | Reached | Mean s to reach | Full's mean s | Time / full | Peak / full |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    timed = _timed(rows)
    for task in ordered_tasks([r for r in timed if r.task in goal]):
        runs = [r for r in timed if r.task == task]
        by_method: dict[str, list[Row]] = {}
        for r in runs:
            by_method.setdefault(r.method, []).append(r)
        full_times = [t for r in by_method["full"] if (t := seconds_to_reach(r, goal[task])) is not None]
        full_s = statistics.fmean(full_times) if full_times else None
        full_peak = _mean([r.peak_train_gib for r in by_method["full"]])
        for method in sorted(by_method, key=method_rank):
            members = by_method[method]
            times = [t for r in members if (t := seconds_to_reach(r, goal[task])) is not None]
            mean_s = statistics.fmean(times) if times else None
            peak = _mean([r.peak_train_gib for r in members])
            cells = [
                TASK_NAMES.get(task, task),
                f"{goal[task]:.2f}",
                method,
                f"{len(times)}/{len(members)}",
                _num(mean_s, 1),
                _num(full_s, 1),
                _num(mean_s / full_s if mean_s is not None and full_s else None, 2),
                _num(peak / full_peak if peak is not None and full_peak else None, 2),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Target: the mean over seeds of full fine-tuning's best dev score. A run reaches it at its first evaluation "
        "(once an epoch) scoring at least the target; seconds are the run's wall time at that evaluation: tap "
        "cache build, training steps (the memory meter's profiled steps included) and evaluations, model loading "
        "excluded. Mean s: over the seeds that reached it.",
    ]
    return "\n".join(lines) + "\n"


def figures(rows: list[Row], out: Path) -> list[Path]:
    """``time_to_score_<task>.png``: validation score against wall time, a line per timed Table 1 run."""
    goal, timed, written = targets(rows), _timed(rows), []
    for task in ordered_tasks(timed):
        runs = sorted((r for r in timed if r.task == task), key=lambda r: (method_rank(r.method), r.seed))
        fig = new_figure((6.5, 4.5))
        ax = fig.add_subplot()
        colours: dict[str, str] = {}
        for r in runs:
            seconds, scores = zip(*r.timed_scores, strict=True)
            first = r.method not in colours
            colours.setdefault(r.method, f"C{len(colours) % 10}")
            ax.plot(seconds, scores, marker="o", color=colours[r.method], label=r.method if first else None)
        if task in goal:
            ax.axhline(goal[task], color="grey", linestyle="--", linewidth=1, label="full fine-tuning's mean")
        ax.set_xlabel("wall time (s): cache build + training + evaluation")
        ax.set_ylabel("validation score")
        ax.set_title(f"Score against wall time: {TASK_NAMES.get(task, task)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"time_to_score_{task}.png"
        fig.savefig(path, dpi=DPI)
        written.append(path)
    return written


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
