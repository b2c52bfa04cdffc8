"""Result rows: one finished run each, read from a run folder or from a results JSON file.

A row is what a table cell or a plotted point averages over: ``task``, ``method``, ``seed``, ``score`` (the best
validation score), ``peak_train_gib`` and ``seconds_per_step`` are required (the last two may be ``null`` when a run
was not measured); the others are optional. A results file holds a list of rows (or one row as an object); a folder
without ``results.json`` holds results files (``*.json``, one run each, as ``benchmarks/suite.py`` writes them).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

REQUIRED = ("task", "method", "seed", "score", "peak_train_gib", "seconds_per_step")
NULLABLE = ("peak_train_gib", "seconds_per_step")
FIGURES = ("table1", "figure5", "figure6", "figure7", "figure8")


@dataclass(frozen=True)
class Row:
    """One finished run, as the report reads it."""

    task: str
    method: str
    seed: int
    score: float
    """The run's best validation score (the task's main metric, in points)."""
    peak_train_gib: float | None
    """Peak training memory (GiB), None when the run was not measured."""
    seconds_per_step: float | None
    """Mean time of an unmeasured training step."""
    figure: str = "table1"
    """Which table or figure the run belongs to: table1, figure5, figure6, figure7 or figure8."""
    variant: str | None = None
    """Its label in a bar chart (Figures 7 and 8: an init, an ablation); None: the method."""
    sweep: str | None = None
    """The setting a trade-off curve varies (Figures 5 and 6): r, lora_rank, adapter_reduction, kept_layers..."""
    value: float | None = None
    """The value of ``sweep`` in this run."""
    trainable_percent: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    metrics_path: str | None = None
    """The run's ``metrics.jsonl`` (training curves), when known."""
    timed_scores: list[list[float]] | None = None
    """``[seconds, score]`` per validation: the run's wall time when it was evaluated (tap cache build, training
    steps and evaluations so far; model loading excluded), for time-to-accuracy (:mod:`.time_to_score`)."""
    source: str = ""
    """Where the row was read (for error messages)."""

    @property
    def label(self) -> str:
        """The row's name in a bar chart or a legend."""
        return self.variant or self.method

    def to_dict(self) -> dict:
        """The row as JSON: the required fields always (a null peak or step time included), the others when set."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k != "source" and (v is not None or k in REQUIRED)
        }


def load_rows(paths: list[str | Path]) -> list[Row]:
    """Rows from each path: a run folder (``results.json``), a results JSON file, or a folder of results files."""
    rows: list[Row] = []
    for path in map(Path, paths):
        if (path / "results.json").is_file():
            rows.append(row_from_run(path))
        elif path.is_dir():
            files = sorted(p for p in path.glob("*.json") if p.is_file())
            runs = sorted(p.parent for p in path.glob("*/results.json"))
            if not files and not runs:
                raise ConfigError(
                    f"{path}: neither a run folder (results.json) nor a folder of results files"
                )
            for f in files:
                rows.extend(rows_from_file(f))
            rows.extend(row_from_run(r) for r in runs)
        elif path.is_file():
            rows.extend(rows_from_file(path))
        else:
            raise ConfigError(f"{path}: no such run folder or results file")
    if not rows:
        raise ConfigError(f"no rows in {', '.join(map(str, paths))}")
    return rows


def rows_from_file(path: Path) -> list[Row]:
    """The rows of a results JSON file (a list of rows, or one row)."""
    data = _read_json(path)
    items = data if isinstance(data, list) else [data]
    return [row_from_dict(item, f"{path} row {i}" if isinstance(data, list) else str(path), path.parent)
            for i, item in enumerate(items)]  # fmt: skip


def row_from_dict(item, where: str, base: Path | None = None) -> Row:
    """A :class:`Row` from a JSON object; a missing or mistyped field is one-line error naming ``where``."""
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: a row must be a JSON object, got {type(item).__name__}")
    for name in REQUIRED:
        if name not in item:
            raise ConfigError(f"{where}: missing field {name!r} (a row needs {', '.join(REQUIRED)})")
    known = {f.name for f in dataclasses.fields(Row)} - {"source"}
    values = {k: v for k, v in item.items() if k in known}
    for name in ("task", "method"):
        _check(isinstance(values[name], str) and values[name], where, name, "a non-empty string")
    _check(
        isinstance(values["seed"], int) and not isinstance(values["seed"], bool), where, "seed", "an integer"
    )
    _check(_is_number(values["score"]), where, "score", "a number")
    timed = values.get("timed_scores")
    if timed is not None:
        _check(
            isinstance(timed, list)
            and all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p)) for p in timed),
            where,
            "timed_scores",
            "a list of [seconds, score] pairs or null",
        )
    for name in (*NULLABLE, "value", "trainable_percent"):
        if values.get(name) is not None:
            _check(_is_number(values[name]), where, name, "a number or null")
    if values.get("figure", "table1") not in FIGURES:
        raise ConfigError(
            f"{where}: field 'figure' must be one of {', '.join(FIGURES)}, got {values['figure']!r}"
        )
    path = values.get("metrics_path")
    if path is not None and base is not None and not Path(path).is_absolute():
        values["metrics_path"] = str(base / path)
    return Row(**values, source=where)


def row_from_run(folder: Path) -> Row:
    """The row of a run folder that ``laddertune train`` finished (its ``results.json``)."""
    path = folder / "results.json"
    results = _read_json(path)
    config = _field(results, path, "config")
    best = _field(results, path, "metrics", "best_validation")
    if best is None:
        raise ConfigError(f"{path}: field 'metrics.best_validation' is null (the run has no evaluation)")
    metrics = folder / "metrics.jsonl"
    return row_from_dict(
        {
            "task": _field(results, path, "task"),
            "method": _field(results, path, "method"),
            "seed": _field(config, path, "seed"),
            "score": _field(best, path, "score"),
            "peak_train_gib": _field(results, path, "memory", "peak_train_gib"),
            "seconds_per_step": _field(results, path, "timing", "seconds_per_step"),
            "trainable_percent": _field(results, path, "parameters", "trainable_percent"),
            "steps": _field(results, path, "timing", "steps"),
            "batch_size": _field(config, path, "batch_size"),
            "metrics_path": str(metrics) if metrics.is_file() else None,
            "timed_scores": (
                timed_scores(
                    metrics, _field(results, path, "timing", "train_seconds"), results["timing"]["steps"]
                )
                if metrics.is_file()
                else None
            ),
        },
        str(path),
    )


def _metric_records(path: str | Path):
    """The records of a ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def read_curve(path: str | Path) -> list[tuple[int, float]]:
    """``(step, loss)`` of each training record of a ``metrics.jsonl``."""
    return [
        (int(r["step"]), float(r["loss"]))
        for r in _metric_records(path)
        if r.get("type") == "train" and _is_number(r.get("loss"))
    ]


def read_scores(path: str | Path) -> list[tuple[int, float]]:
    """``(step, score)`` of each validation record of a ``metrics.jsonl``."""
    return [
        (int(r["step"]), float(r["metrics"]["score"]))
        for r in _metric_records(path)
        if r.get("type") == "eval"
        and r.get("split") == "validation"
        and _is_number((r.get("metrics") or {}).get("score"))
    ]


def timed_scores(path: str | Path, train_seconds: float, steps: int) -> list[list[float]] | None:
    """``[seconds, score]`` per validation record of a ``metrics.jsonl``: the tap cache's build seconds, the
    training seconds up to the evaluated step and the evaluations' seconds so far. The training seconds are the
    cumulative ``train_seconds`` of the last training record (logged since laddertune 0.2); a log without them
    gets the run's total ``train_seconds`` pro rata of the step (None: no validation records)."""
    build = trained = evals = 0.0
    out = []
    for r in _metric_records(path):
        kind = r.get("type")
        if kind == "tap_cache" and _is_number(r.get("build_seconds")):
            build += r["build_seconds"]
        elif kind == "train" and _is_number(r.get("train_seconds")):
            trained = r["train_seconds"]
        elif (
            kind == "eval"
            and r.get("split") == "validation"
            and _is_number((r.get("metrics") or {}).get("score"))
        ):
            evals += r.get("eval_seconds") or 0.0
            at = trained if trained else train_seconds * int(r["step"]) / max(steps, 1)
            out.append([round(build + at + evals, 3), float(r["metrics"]["score"])])
    return out or None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None


def _field(data, path: Path, *keys: str):
    """``data[k1][k2]...``, or a one-line error naming the file and the dotted field."""
    for i, key in enumerate(keys):
        if not isinstance(data, dict) or key not in data:
            raise ConfigError(f"{path}: missing field {'.'.join(keys[: i + 1])!r}")
        data = data[key]
    return data


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, where: str, name: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: field {name!r} must be {what}")
