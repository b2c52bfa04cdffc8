"""Markdown tables: one per table or figure whose rows are present, mean ± std over seeds per task, the average."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .rows import Row
from .summary import TASK_NAMES, Group, method_rank, ordered_tasks, summarize


@dataclass(frozen=True)
class Layout:
    """How one table groups its rows: the key's columns (field names and headers), and the row order."""

    title: str
    fields: tuple[str, ...]
    headers: tuple[str, ...]
    key: Callable[[Row], tuple]
    order: Callable[[Group], tuple] | None  # None: the order the rows came in


def _sweep_order(g: Group) -> tuple:
    method, sweep, value = g.key
    return (*method_rank(method), sweep or "", value if value is not None else float("inf"))


def _sweep_key(r: Row) -> tuple:
    return (r.method, r.sweep, r.value)


def _sweep_layout(title: str) -> Layout:
    """Figures 5 and 6: a row per method and setting of its sweep."""
    return Layout(
        title, ("method", "sweep", "value"), ("Method", "Setting", "Value"), _sweep_key, _sweep_order
    )


LAYOUTS = {
    "table1": Layout(
        "Table 1: score per task and method (mean ± std over seeds), GLUE-style average, costs",
        ("method",),
        ("Method",),
        lambda r: (r.method,),
        lambda g: method_rank(g.key[0]),
    ),
    "figure5": _sweep_layout("Figure 5: LST reduction factor r against LoRA rank and adapter size"),
    "figure6": _sweep_layout("Figure 6: dropping side layers (LST) against freezing backbone layers"),
    "figure7": Layout(
        "Figure 7: side-network initialisation", ("variant",), ("Init",), lambda r: (r.label,), None
    ),
    "figure8": Layout(
        "Figure 8: ladders against side-tuning and the pruned side network alone",
        ("variant",),
        ("Variant",),
        lambda r: (r.label,),
        None,
    ),
}


def rows_of(rows: list[Row], name: str) -> list[Row]:
    """The rows of table or figure ``name``."""
    return [r for r in rows if r.figure == name]


def groups_of(rows: list[Row], name: str) -> list[Group]:
    """The table rows of ``name`` (empty when no row belongs to it), in the layout's order."""
    layout, members = LAYOUTS[name], rows_of(rows, name)
    if not members:
        return []
    groups = summarize(members, layout.key)
    return sorted(groups, key=layout.order) if layout.order else groups


def markdown(rows: list[Row], name: str) -> str | None:
    """The markdown table of ``name`` (None when no row belongs to it)."""
    groups = groups_of(rows, name)
    if not groups:
        return None
    layout, tasks = LAYOUTS[name], ordered_tasks(rows_of(rows, name))
    headers = [*layout.headers, *(TASK_NAMES.get(t, t) for t in tasks)]
    if len(tasks) > 1:
        headers.append("Avg")
    headers += ["Peak train GiB", "s/step", "Trainable %", "Runs"]
    lines = [
        f"### {layout.title}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * len(layout.headers) + ["---:"] * (len(headers) - len(layout.headers))) + "|",
    ]
    for g in groups:
        cells = [_value(v) for v in g.key]
        cells += [g.tasks[t].text() if t in g.tasks else "-" for t in tasks]
        if len(tasks) > 1:
            cells.append(g.average.text() if g.average else "-")
        cells += [
            _number(g.peak_train_gib, 3),
            _number(g.seconds_per_step, 3),
            _number(g.trainable_percent, 3),
            str(len(g.rows)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r.seed for r in rows_of(rows, name)})
    lines += [
        "",
        f"Scores: best validation score per run; mean ± sample std over seeds {', '.join(map(str, seeds))} "
        "(a single run shows its score alone). Avg: the mean of the task means (a row missing a task has none). "
        "Peak memory and s/step: the mean over a row's measured runs.",
    ]
    return "\n".join(lines) + "\n"


def summary(rows: list[Row]) -> dict:
    """Every table's groups as JSON-ready dicts, keyed by table name (the tables present only)."""
    return {
        name: [g.to_dict(LAYOUTS[name].fields) for g in groups_of(rows, name)]
        for name in LAYOUTS
        if rows_of(rows, name)
    }


def _value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _number(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
