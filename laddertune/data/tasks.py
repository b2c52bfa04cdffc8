"""The task table: one frozen :class:`TaskSpec` per GLUE task, custom specs, and the text-to-text format.

A spec says which columns hold the text, how labels look, which metric scores the task, how many epochs the
paper trains it (reference §4) and how an example reads in the text-to-text format of T5
(``"rte sentence1: ... sentence2: ..."``). :func:`parse_prediction` turns generated text back into a label.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import ConfigError

METRICS = ("matthews", "accuracy", "f1_accuracy", "pearson_spearman")
PAPER_SPLITS = ("halve", "train_holdout", "mismatched")


@dataclass(frozen=True)
class TaskSpec:
    """How one task's data looks and is scored.

    Attributes:
        name (str): task name; also the text-to-text prefix (``"rte sentence1: ..."``).
        text_columns (tuple[str, ...]): one or two column names holding the text (Hugging Face names).
        label_column (str): column holding the label.
        num_labels (int): number of classes; 1 means regression (STS-B).
        label_names (tuple[str, ...]): class names in id order; for custom string labels, the original strings
            (mapped to ids in sorted order). Empty for regression.
        metric (str): one of ``matthews``, ``accuracy``, ``f1_accuracy``, ``pearson_spearman``.
        epochs (int): default number of training epochs (reference §4).
        prompt_keys (tuple[str, ...]): the keys written before each text in the text-to-text format;
            defaults to ``text_columns``.
        validation_split (str): hub split holding the official GLUE dev set (MNLI: ``validation_matched``).
        paper_split (str): how the paper protocol splits the data: ``halve`` (dev set halved into validation
            and test), ``train_holdout`` (1000 train rows as validation, dev as test) or ``mismatched``
            (MNLI: mismatched dev as validation, matched dev as test).
        label_range (tuple[float, float] | None): allowed interval of a regression label (STS-B: 0 to 5).
    """

    name: str
    text_columns: tuple[str, ...]
    label_column: str = "label"
    num_labels: int = 2
    label_names: tuple[str, ...] = ()
    metric: str = "accuracy"
    epochs: int = 10
    prompt_keys: tuple[str, ...] = field(default=())
    validation_split: str = "validation"
    paper_split: str = "halve"
    label_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.text_columns) <= 2:
            raise ConfigError(f"task {self.name!r}: one or two text columns, got {list(self.text_columns)}")
        if self.metric not in METRICS:
            raise ConfigError(f"task {self.name!r}: unknown metric {self.metric!r}; choose one of {METRICS}")
        if self.paper_split not in PAPER_SPLITS:
            raise ConfigError(f"task {self.name!r}: unknown paper split {self.paper_split!r}")
        if self.num_labels < 1:
            raise ConfigError(f"task {self.name!r}: num_labels must be >= 1, got {self.num_labels}")
        if not self.prompt_keys:
            object.__setattr__(self, "prompt_keys", tuple(self.text_columns))
        if len(self.prompt_keys) != len(self.text_columns):
            raise ConfigError(f"task {self.name!r}: one prompt key per text column")

    @property
    def is_regression(self) -> bool:
        """True when the label is a real number (one output)."""
        return self.num_labels == 1

    @property
    def has_pair(self) -> bool:
        """True when examples hold a text pair."""
        return len(self.text_columns) == 2

    @property
    def label_map(self) -> dict[str, int]:
        """Class name -> id (empty for regression)."""
        return {n: i for i, n in enumerate(self.label_names)}

    def format_source(self, example: dict) -> str:
        """The text-to-text source, e.g. ``"rte sentence1: A. sentence2: B."``."""
        parts = [self.name, f"{self.prompt_keys[0]}: {example['text']}"]
        if self.has_pair:
            parts.append(f"{self.prompt_keys[1]}: {example.get('text_pair') or ''}")
        return " ".join(parts)

    def format_target(self, label: int | float) -> str:
        """The text-to-text target: the class id as a string, or the score on STS-B's 0.2 grid (``"3.2"``).

        Rounding is half-up to the nearest multiple of 0.2 (the authors' code meant to do this, but its
        ``np.round(label * 5 / 5, 1)`` only rounds to one decimal).
        """
        if self.is_regression:
            return f"{math.floor(float(label) * 5 + 0.5) / 5:.1f}"
        return str(int(label))


def parse_prediction(spec: TaskSpec, text: str) -> int | float | None:
    """Turn a generated text-to-text answer back into a label.

    Accepts the class id (``"1"``) or, case-insensitively, a class name (``"entailment"``); for regression, a
    finite number. Tries the whole stripped text, then the text without spaces (WordPiece decodes ``"3.2"`` as
    ``"3. 2"``), then its first word (``"1 </s> 1"``).

    Args:
        spec (TaskSpec): the task.
        text (str): the decoded output, special tokens removed.

    Returns:
        int | float | None: the label, or None when the text is no valid label (metrics count it as wrong).
    """
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    if not stripped:
        return None
    names = {n.lower(): i for i, n in enumerate(spec.label_names)}
    for cand in (stripped, "".join(stripped.split()), stripped.split()[0]):
        if spec.is_regression:
            try:
                value = float(cand)
            except ValueError:
                continue
            if math.isfinite(value):
                return value
            continue
        if cand.lower() in names:
            return names[cand.lower()]
        try:
            value = int(cand)
        except ValueError:
            continue
        if 0 <= value < spec.num_labels:
            return value
    return None


def _glue(name, columns, num_labels, names, metric, epochs, paper_split, **kw) -> TaskSpec:
    return TaskSpec(name, columns, "label", num_labels, names, metric, epochs, paper_split=paper_split, **kw)


TASKS: dict[str, TaskSpec] = {
    "cola": _glue("cola", ("sentence",), 2, ("unacceptable", "acceptable"), "matthews", 20, "halve"),
    "sst2": _glue("sst2", ("sentence",), 2, ("negative", "positive"), "accuracy", 10, "train_holdout"),
    "mrpc": _glue(
        "mrpc", ("sentence1", "sentence2"), 2, ("not_equivalent", "equivalent"), "f1_accuracy", 20, "halve"
    ),
    "qqp": _glue(
        "qqp",
        ("question1", "question2"),
        2,
        ("not_duplicate", "duplicate"),
        "f1_accuracy",
        10,
        "train_holdout",
    ),
    "stsb": _glue(
        "stsb", ("sentence1", "sentence2"), 1, (), "pearson_spearman", 20, "halve", label_range=(0.0, 5.0)
    ),
    "mnli": _glue(
        "mnli",
        ("premise", "hypothesis"),
        3,
        ("entailment", "neutral", "contradiction"),
        "accuracy",
        10,
        "mismatched",
        validation_split="validation_matched",
    ),
    "qnli": _glue(
        "qnli", ("question", "sentence"), 2, ("entailment", "not_entailment"), "accuracy", 10, "train_holdout"
    ),
    "rte": _glue(
        "rte", ("sentence1", "sentence2"), 2, ("entailment", "not_entailment"), "accuracy", 20, "halve"
    ),
}


def get_task(name: str) -> TaskSpec:
    """Look up a GLUE task by name (case-insensitive; ``sst-2``/``sts-b`` spellings accepted).

    Raises:
        ConfigError: unknown task; the message lists the valid ones.
    """
    key = str(name).lower().replace("-", "")
    if key not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} or 'custom'")
    return TASKS[key]


def make_custom_spec(
    text_column: str,
    text_pair_column: str | None = None,
    *,
    label_column: str = "label",
    num_labels: int = 2,
    label_names: tuple[str, ...] | None = None,
    name: str = "custom",
    epochs: int = 10,
) -> TaskSpec:
    """A spec for the user's own data: accuracy for classification, Pearson/Spearman for regression.

    Args:
        text_column (str): column with the (first) text.
        text_pair_column (str | None): optional column with the second text.
        label_column (str): column with the label.
        num_labels (int): classes; 1 for regression.
        label_names (tuple[str, ...] | None): class names in id order; defaults to ``"0"``, ``"1"``, ...
        name (str): task name, used as the text-to-text prefix.
        epochs (int): default training epochs.
    """
    columns = (text_column,) if text_pair_column is None else (text_column, text_pair_column)
    if label_names is None:
        label_names = () if num_labels == 1 else tuple(str(i) for i in range(num_labels))
    metric = "pearson_spearman" if num_labels == 1 else "accuracy"
    return TaskSpec(name, columns, label_column, num_labels, tuple(label_names), metric, epochs)


def spec_to_dict(spec: TaskSpec) -> dict:
    """A JSON-ready dict of ``spec`` (what a checkpoint stores so that prediction needs no task table)."""
    return {f: (list(v) if isinstance(v, tuple) else v) for f, v in dataclasses.asdict(spec).items()}


def spec_from_dict(data: dict) -> TaskSpec:
    """Inverse of :func:`spec_to_dict`; a malformed dict is a :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a task spec must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TaskSpec)}
    unknown = sorted(map(str, set(data) - known))
    if unknown:
        raise ConfigError(f"unknown task spec field(s): {', '.join(map(repr, unknown))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    for name, kind in _FIELD_KINDS.items():
        if name in values and not _of_kind(values[name], kind):
            raise ConfigError(f"task spec field {name!r} must be {kind}, got {values[name]!r}")
    try:
        return TaskSpec(**values)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"malformed task spec: {e}") from None


# what each TaskSpec field holds in JSON (spec_from_dict checks a hand-edited task.json against it)
_FIELD_KINDS = {
    "name": "a string",
    "text_columns": "a list of strings",
    "label_column": "a string",
    "num_labels": "an integer",
    "label_names": "a list of strings",
    "metric": "a string",
    "epochs": "an integer",
    "prompt_keys": "a list of strings",
    "validation_split": "a string",
    "paper_split": "a string",
    "label_range": "null or a list of two numbers",
}


def _of_kind(value, kind: str) -> bool:
    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if kind == "a string":
        return isinstance(value, str)
    if kind == "an integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "a list of strings":
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    return value is None or (isinstance(value, tuple) and len(value) == 2 and all(map(number, value)))
