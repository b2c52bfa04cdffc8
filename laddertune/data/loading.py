"""Load GLUE or the user's own data into validated train/validation/test splits.

Examples are plain dicts ``{"text": str, "text_pair": str | None, "label": int | float}``.

Sources, first match wins: the user's files (``train_file``; always for ``task="custom"``), a folder in the layout
``<dir>/<task>/train.jsonl`` + ``validation.jsonl`` (``data_dir`` or env ``LADDERTUNE_DATA_DIR``), else the hub
(``datasets.load_dataset("nyu-mll/glue", task)``), and when the hub cannot be reached, the small sample
shipped in ``laddertune/data/sample`` for the tasks it holds (SST-2). Protocols:

- ``dev``: train = train, validation = the official dev set, no test set.
- ``paper`` (reference §4, data-split seed 42): CoLA/RTE/MRPC/STS-B halve the shuffled dev set into validation and
  test; QQP/QNLI/SST-2 hold 1000 train rows out as validation and test on the dev set; MNLI validates on the
  mismatched and tests on the matched dev set (a folder with a single MNLI dev file is halved, with a warning).

Every data problem raises a one-line :class:`DataError` naming the file and line. Batching (tokenisation,
dynamic padding, the three formats) is in :mod:`laddertune.data.collate`.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io import portable_path
from .examples import infer_custom_spec, to_examples
from .rows import Rows, read_rows
from .tasks import TaskSpec, get_task

logger = logging.getLogger(__name__)

ENV_DATA_DIR = "LADDERTUNE_DATA_DIR"
HUB_ID = "nyu-mll/glue"
# A small real sample shipped with the package (SST-2: 4,000 train rows + the official dev set; README.md there)
SAMPLE_DIR = Path(__file__).parent / "sample"
PROTOCOLS = ("dev", "paper")
PAPER_HOLDOUT = 1000  # train rows held out as validation for QQP, QNLI, SST-2 (reference §4)


@dataclass
class Splits:
    """The data of one run and how it was made.

    Attributes:
        train (list[dict]): training examples.
        validation (list[dict]): examples for model selection.
        test (list[dict] | None): held-out examples (paper protocol), else None.
        spec (TaskSpec): the task (for custom data: the inferred labels).
        protocol (str): ``dev`` or ``paper``.
        seed (int): the seed of every shuffle.
        source (str): where the data came from.
        notes (list[str]): how the splits were made, one line each.
    """

    train: list[dict]
    validation: list[dict]
    test: list[dict] | None
    spec: TaskSpec
    protocol: str
    seed: int
    source: str
    notes: list[str] = field(default_factory=list)
    source_paths: list[str] = field(default_factory=list)  # the local paths named in ``source``

    def summary(self, relative_to: str | Path | None = None) -> dict:
        """Sizes and provenance, for a results JSON; with ``relative_to``, the source's local paths relative to
        that folder (a run folder records no absolute path, see :mod:`laddertune.io.paths`)."""
        source = self.source
        if relative_to is not None:
            for path in self.source_paths:
                source = source.replace(path, portable_path(path, relative_to, must_exist=False))
        sizes = {"train": len(self.train), "validation": len(self.validation)}
        sizes["test"] = None if self.test is None else len(self.test)
        return {
            "task": self.spec.name,
            "protocol": self.protocol,
            "seed": self.seed,
            "source": source,
            "sizes": sizes,
            "label_names": list(self.spec.label_names),
            "notes": list(self.notes),
        }


# -------------------------------------------------------------------------------------------------- sources


def _from_folder(spec: TaskSpec, folder: Path) -> dict[str, Rows]:
    task_dir = folder / spec.name
    if not task_dir.is_dir():
        raise DataError(
            f"{task_dir}: no such folder (data folder layout: <dir>/<task>/train.jsonl, validation.jsonl)"
        )
    parts = {"train": read_rows(task_dir / "train.jsonl")}
    if (task_dir / "validation_mismatched.jsonl").is_file():  # MNLI with both dev sets
        parts["validation_mismatched"] = read_rows(task_dir / "validation_mismatched.jsonl")
        parts["validation"] = read_rows(task_dir / "validation_matched.jsonl")
    else:
        parts["validation"] = read_rows(task_dir / "validation.jsonl")
    return parts


def _from_hub(spec: TaskSpec) -> dict[str, Rows]:
    try:
        import datasets

        ds = datasets.load_dataset(HUB_ID, spec.name)
        parts = {"train": ds["train"], "validation": ds[spec.validation_split]}
        if spec.paper_split == "mismatched":
            parts["validation_mismatched"] = ds["validation_mismatched"]
    except Exception as e:  # noqa: BLE001 - offline, network, cache, dataset changes: all mean "not from the hub"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(
            f"cannot load GLUE task {spec.name!r} from the Hugging Face hub ({HUB_ID}): {first}; "
            f"pass --data-dir or set {ENV_DATA_DIR} to a folder with <task>/train.jsonl and validation.jsonl"
        ) from None
    return {
        k: [(f"{HUB_ID}/{spec.name} {k} row {i}", dict(r)) for i, r in enumerate(d)] for k, d in parts.items()
    }


def _from_hub_or_sample(spec: TaskSpec) -> tuple[dict[str, Rows], str]:
    """The hub; when it cannot be reached and laddertune ships a sample of the task, the sample (with a warning)."""
    try:
        return _from_hub(spec), f"hub {HUB_ID}/{spec.name}"
    except DataError:
        if not (SAMPLE_DIR / spec.name).is_dir():
            raise
    logger.warning(
        "GLUE %s is not reachable on the hub: using laddertune's embedded sample (%s; see its README.md); "
        "pass --data-dir for the full task",
        spec.name,
        SAMPLE_DIR / spec.name,
    )
    return _from_folder(spec, SAMPLE_DIR), f"embedded sample {spec.name} (laddertune/data/sample)"


# ------------------------------------------------------------------------------------------------ protocols


def _shuffled(xs: list, seed: int) -> list:
    xs = list(xs)
    random.Random(seed).shuffle(xs)
    return xs


def _subsample(xs: list[dict], n: int | None, seed: int, what: str) -> list[dict]:
    """A deterministic prefix of ``xs`` after a seeded shuffle."""
    if n is None or n >= len(xs):
        return xs
    if n < 1:
        raise ConfigError(f"{what} must be >= 1, got {n}")
    return _shuffled(xs, seed)[:n]


def _halve(xs: list[dict], seed: int, what: str) -> tuple[list[dict], list[dict]]:
    if len(xs) < 2:
        raise DataError(
            f"{what} has {len(xs)} example(s); halving it into validation and test needs two or more"
        )
    xs = _shuffled(xs, seed)
    return xs[: len(xs) // 2], xs[len(xs) // 2 :]


def _paper_split(spec: TaskSpec, parts: dict[str, list[dict]], seed: int, source: str, notes: list[str]):
    train, dev = parts["train"], parts["validation"]
    if spec.paper_split == "train_holdout":
        if len(train) <= PAPER_HOLDOUT:
            raise DataError(
                f"the paper protocol holds {PAPER_HOLDOUT} train rows out; {spec.name} has {len(train)}"
            )
        shuffled = _shuffled(train, seed)
        notes.append(f"validation: {PAPER_HOLDOUT} train rows (seed {seed}); test: the dev set")
        return shuffled[PAPER_HOLDOUT:], shuffled[:PAPER_HOLDOUT], dev
    if spec.paper_split == "mismatched" and "validation_mismatched" in parts:
        notes.append("validation: the mismatched dev set; test: the matched dev set")
        return train, parts["validation_mismatched"], dev
    if spec.paper_split == "mismatched":
        msg = (
            "the paper validates MNLI on the mismatched and tests on the matched dev set, but "
            f"{source} has a single MNLI dev set; halving it into validation and test instead"
        )
        logger.warning(msg)
        notes.append(msg)
    val, test = _halve(dev, seed, f"{spec.name} dev set")
    notes.append(f"validation/test: the dev set shuffled (seed {seed}) and halved")
    return train, val, test


def load_splits(
    task: str,
    *,
    data_dir: str | os.PathLike | None = None,
    protocol: str = "dev",
    seed: int = 42,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    problem_type: str | None = None,
) -> Splits:
    """Load a task's data, validate every row, and split it by ``protocol``.

    Args:
        task (str): a GLUE task name or ``"custom"``.
        data_dir (str | PathLike | None): a folder with ``<task>/train.jsonl`` and ``<task>/validation.jsonl``;
            defaults to env ``LADDERTUNE_DATA_DIR``, else the Hugging Face hub.
        protocol (str): ``"dev"`` or ``"paper"`` (see the module docstring).
        seed (int): seed of the paper splits and of subsampling.
        train_file (str | PathLike | None): the user's training file (.jsonl, .csv, .tsv); required for custom.
        validation_file (str | PathLike | None): the user's dev file; without it 10% of train is held out.
        text_column (str | None): column of the first text (required for custom; overrides a GLUE task's).
        text_pair_column (str | None): column of the second text, if any.
        label_column (str | None): column of the label (default ``"label"``).
        max_train_samples (int | None): keep this many training examples (seeded shuffle, then a prefix).
        max_eval_samples (int | None): the same for validation and test.
        problem_type (str | None): custom data: ``regression`` or ``single_label_classification`` instead of
            inferring it from the labels.

    Returns:
        Splits: the examples, the (possibly inferred) task spec, and notes on how the splits were made.

    Raises:
        ConfigError: unknown task or protocol, custom task without a file or text column.
        DataError: any problem with the data, one line naming the file and line.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    custom = str(task).lower() == "custom"
    notes: list[str] = []
    if custom and (train_file is None or not text_column):
        raise ConfigError("task 'custom' needs --train-file and --text-column")
    spec = None if custom else get_task(task)
    if spec is not None and (text_column or text_pair_column or label_column):
        spec = _override_columns(spec, text_column, text_pair_column, label_column)
    data_dir = data_dir or os.environ.get(ENV_DATA_DIR) or None
    if train_file is not None:
        raw = {"train": read_rows(train_file)}
        if validation_file is not None:
            raw["validation"] = read_rows(validation_file)
        source = f"files {train_file}" + (f", {validation_file}" if validation_file else "")
        source_paths = [str(train_file), *([str(validation_file)] if validation_file else [])]
        if spec is None:
            spec = infer_custom_spec(
                raw["train"], text_column, text_pair_column, label_column or "label", problem_type
            )
    elif data_dir is not None:
        raw, source = _from_folder(spec, Path(data_dir)), f"folder {Path(data_dir) / spec.name}"
        source_paths = [str(Path(data_dir) / spec.name)]
    else:
        raw, source = _from_hub_or_sample(spec)
        source_paths = []
    parts = {k: to_examples(rows, spec) for k, rows in raw.items()}
    if "validation" not in parts:
        if len(parts["train"]) < 2:
            raise DataError(f"{train_file}: one example; holding out a validation set needs two or more")
        shuffled = _shuffled(parts["train"], seed)
        k = max(1, min(PAPER_HOLDOUT, len(shuffled) // 10))
        parts["train"], parts["validation"] = shuffled[k:], shuffled[:k]
        notes.append(f"no validation file: {k} train rows held out as the dev set (seed {seed})")
    if protocol == "dev":
        train, validation, test = parts["train"], parts["validation"], None
        notes.append("validation: the dev set; no test set")
    else:
        train, validation, test = _paper_split(spec, parts, seed, source, notes)
    train = _subsample(train, max_train_samples, seed, "max_train_samples")
    validation = _subsample(validation, max_eval_samples, seed, "max_eval_samples")
    test = None if test is None else _subsample(test, max_eval_samples, seed, "max_eval_samples")
    splits = Splits(train, validation, test, spec, protocol, seed, source, notes, source_paths)
    logger.info("loaded %s: %s", spec.name, splits.summary()["sizes"])
    return splits


def _override_columns(spec: TaskSpec, text: str | None, pair: str | None, label: str | None) -> TaskSpec:
    """A GLUE spec reading other column names; the prompt keys stay the task's own."""
    import dataclasses

    cols = list(spec.text_columns)
    cols[0] = text or cols[0]
    if pair:
        if not spec.has_pair:
            raise ConfigError(f"task {spec.name} has one text column; --text-pair-column does not apply")
        cols[1] = pair
    return dataclasses.replace(spec, text_columns=tuple(cols), label_column=label or spec.label_column)
