"""PNG figures drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state).

Figure 1: score against peak training memory, one point per method (Table 1's rows). Figures 5 and 6: trade-off
curves, score against trainable share and against peak memory, one line per (method, swept setting). Figures 7 and
8: bars per variant and task with the standard deviation over seeds as error bars. Training curves: the loss
against the step of each run whose ``metrics.jsonl`` is known, one PNG per (table or figure, task).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import import_optional
from .rows import Row, read_curve, read_scores
from .summary import TASK_NAMES, Group, ordered_tasks
from .tables import LAYOUTS, groups_of, rows_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib ``Figure`` on the Agg canvas: PNG rendering without any GUI backend or pyplot state.

    Raises:
        ConfigError: matplotlib is not installed (it comes with ``laddertune[report]``).
    """
    figure = import_optional("matplotlib.figure", "report", "drawing figures")
    agg = import_optional("matplotlib.backends.backend_agg", "report", "drawing figures")
    fig = figure.Figure(figsize=figsize)
    agg.FigureCanvasAgg(fig)
    return fig


def write_figures(rows: list[Row], out: Path) -> list[Path]:
    """Draw every figure whose rows are present into ``out``; returns the PNGs written."""
    written = []
    if (path := figure1(rows, out / "figure1.png")) is not None:
        written.append(path)
    for name in ("figure5", "figure6"):
        if (path := tradeoff(rows, name, out / f"{name}.png")) is not None:
            written.append(path)
    for name in ("figure7", "figure8"):
        if (path := bars(rows, name, out / f"{name}.png")) is not None:
            written.append(path)
    return written + curves(rows, out)


def score_of(g: Group) -> tuple[float, float]:
    """A group's plotted score and its error bar: the average over tasks and its std over seeds, or the one
    task's mean and std, or (when tasks are missing) the mean of the task means it has and no bar."""
    if g.average is not None:
        return g.average.mean, g.average.std
    if len(g.tasks) == 1:
        (only,) = g.tasks.values()
        return only.mean, only.std
    return statistics.fmean(s.mean for s in g.tasks.values()), 0.0


def figure1(rows: list[Row], path: Path) -> Path | None:
    """Score against peak training memory, one point per method (None: no measured Table 1 rows)."""
    groups = [g for g in groups_of(rows, "table1") if g.peak_train_gib is not None]
    if not groups:
        return None
    fig = new_figure((6, 4.5))
    ax = fig.add_subplot()
    for g in groups:
        score, err = score_of(g)
        ax.errorbar(g.peak_train_gib, score, yerr=err, fmt="o", capsize=3)
        ax.annotate(g.key[0], (g.peak_train_gib, score), textcoords="offset points", xytext=(5, 5))
    tasks = ordered_tasks(rows_of(rows, "table1"))
    ax.set_xlabel("peak training memory (GiB)")
    ax.set_ylabel("score" + (" (average over tasks)" if len(tasks) > 1 else f" ({_task(tasks[0])})"))
    ax.set_title("Figure 1: score against peak training memory")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def tradeoff(rows: list[Row], name: str, path: Path) -> Path | None:
    """Score against trainable share and against peak memory, a line per (method, setting) of ``name``."""
    groups = groups_of(rows, name)
    if not groups:
        return None
    axes = [
        ("trainable_percent", "trainable parameters (%)"),
        ("peak_train_gib", "peak training memory (GiB)"),
    ]
    axes = [(f, label) for f, label in axes if any(getattr(g, f) is not None for g in groups)]
    if not axes:  # neither a share nor a peak: plot against the swept value
        axes = [("value", "swept value")]
    fig = new_figure((5.5 * len(axes), 4.5))
    series: dict[tuple, list[Group]] = {}
    for g in groups:
        series.setdefault(g.key[:2], []).append(g)
    for i, (field, label) in enumerate(axes):
        ax = fig.add_subplot(1, len(axes), i + 1)
        for (method, sweep), members in series.items():
            points = [(_x(g, field), *score_of(g), g.key[2]) for g in members if _x(g, field) is not None]
            points.sort()
            if not points:
                continue
            xs, ys, errs, values = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=f"{method} ({sweep or 'default'})")
            for x, y, v in zip(xs, ys, values, strict=True):
                ax.annotate(_short(v), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(LAYOUTS[name].title)
    return _save(fig, path)


def bars(rows: list[Row], name: str, path: Path) -> Path | None:
    """Grouped bars: per task (and the average), one bar per variant, std over seeds as error bars."""
    groups = groups_of(rows, name)
    if not groups:
        return None
    tasks = ordered_tasks(rows_of(rows, name))
    clusters = tasks + (["avg"] if len(tasks) > 1 else [])
    width = 0.8 / len(groups)
    fig = new_figure((max(5.0, 1.2 * len(clusters) * len(groups) ** 0.5 + 2), 4.5))
    ax = fig.add_subplot()
    for i, g in enumerate(groups):
        xs, ys, errs = [], [], []
        for c, task in enumerate(clusters):
            s = g.average if task == "avg" else g.tasks.get(task)
            if s is not None:
                xs.append(c + (i - (len(groups) - 1) / 2) * width)
                ys.append(s.mean)
                errs.append(s.std)
        ax.bar(xs, ys, width=width, yerr=errs, capsize=3, label=g.key[0])
    ax.set_xticks(range(len(clusters)), [_task(t) if t != "avg" else "Avg" for t in clusters])
    ax.set_ylabel("score (mean ± std over seeds)")
    lows = [s.mean - s.std for g in groups for s in g.tasks.values()]
    ax.set_ylim(bottom=max(0.0, min(lows) - 5))  # the differences sit near the top of a 0-100 axis
    ax.set_title(LAYOUTS[name].title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def curves(rows: list[Row], out: Path) -> list[Path]:
    """Training loss against step, a line per run, one PNG per (table or figure, task) with known curves; beside
    it the validation score against the training time (step x the run's mean s/step: an estimate that leaves out
    evaluation and the measured steps) where a run has a step time."""
    by_plot: dict[tuple[str, str], list[tuple[Row, list]]] = {}
    for row in rows:
        if row.metrics_path is None or not Path(row.metrics_path).is_file():
            continue
        points = read_curve(row.metrics_path)
        if points:
            by_plot.setdefault((row.figure, row.task), []).append((row, points))
    written = []
    for (figure, task), runs in sorted(by_plot.items()):
        timed = [(row, read_scores(row.metrics_path)) for row, _ in runs if row.seconds_per_step is not None]
        timed = [(row, scores) for row, scores in timed if scores]
        fig = new_figure((6.5 * (1 + bool(timed)), 4.5))
        ax = fig.add_subplot(1, 1 + bool(timed), 1)
        for row, points in runs:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, linewidth=1, label=_legend(row))
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"Training curves: {figure}, {_task(task)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if len(runs) < 12 else 5, ncol=1 if len(runs) < 12 else 2)
        if timed:
            ax = fig.add_subplot(1, 2, 2)
            for row, scores in timed:
                steps, values = zip(*scores, strict=True)
                ax.plot([s * row.seconds_per_step for s in steps], values, marker="o", label=_legend(row))
            ax.set_xlabel("training time (s, step x mean s/step)")
            ax.set_ylabel("validation score")
            ax.set_title("Validation score against training time")
            ax.grid(alpha=0.3)
        written.append(_save(fig, out / f"curves_{figure}_{task}.png"))
    return written


def _legend(row: Row) -> str:
    setting = f" {row.sweep}={_short(row.value)}" if row.sweep else ""
    return f"{row.label}{setting} seed {row.seed}"


def _x(g: Group, field: str) -> float | None:
    return g.key[2] if field == "value" else getattr(g, field)


def _task(task: str) -> str:
    return TASK_NAMES.get(task, task)


def _short(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
