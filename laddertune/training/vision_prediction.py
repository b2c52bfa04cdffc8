"""Prediction from a vision-and-language checkpoint: new questions (statements, or nothing for a caption) on new
images, whose features are in a feature file, in; generated answers out.

A row (JSONL, CSV or TSV) names its images and its text: ``images`` (a list), ``image_id`` / ``img_id`` (one
image) or ``img0`` + ``img1`` (NLVR2's pair, VL-Adapter's names); the text in ``text``, ``question``,
``sentence`` or ``sent``; and, for a multi-task checkpoint, its ``task`` (vqa, gqa, nlvr2, caption). VL-Adapter's
annotation records are such rows. Each answer is ``{"task", "answer"}``. Everything is checked (every row's task,
text and images, every image in the feature file, the features' size against the checkpoint's) before the model
loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.backbones import load_tokenizer
from ..errors import ConfigError, DataError
from ..methods import get_method
from ..vision.features import FeatureStore
from ..vision.tasks import RUN_TASKS, VLExample, get_vl_task, make_example
from ..vision.training import VLCollator
from ..vision.visual_embedding import VisualConfig
from .build import load_task_backbone
from .config import CONFIG_NAME, TrainConfig
from .generative_prediction import generation_settings
from .run_paths import require_backbone
from .vision_data import HEAD
from .vision_evaluation import generate_answers, generation_kwargs
from .vision_method import VisionMethod

TEXT_COLUMNS = ("text", "question", "sentence", "sent")


@dataclass(frozen=True)
class VisionTask:
    """What a vision-and-language checkpoint's ``task.json`` says about its inputs."""

    name: str
    tasks: tuple[str, ...]
    visual: VisualConfig
    max_source_length: int


def vision_task(task: dict) -> VisionTask:
    """The :class:`VisionTask` of a ``task.json`` (a ConfigError naming what is malformed)."""
    record = task["vision"]
    if not isinstance(record, dict):
        raise ConfigError("its vision record must be a mapping")
    tasks = record.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(t in RUN_TASKS.values() for t in tasks):
        raise ConfigError(f"its vision tasks must be a list of {', '.join(sorted(set(RUN_TASKS.values())))}")
    visual = record.get("visual")
    if not isinstance(visual, dict):
        raise ConfigError("its vision record lacks the visual input's shape")
    try:
        visual = VisualConfig(**visual)
    except TypeError as e:
        raise ConfigError(f"its visual input is malformed: {e}") from None
    length = record.get("max_source_length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"its max_source_length must be a positive integer, got {length!r}")
    return VisionTask(str(task.get("task")), tuple(tasks), visual, length)


def rows_to_vl_examples(
    rows: list[tuple[str, dict]], task: VisionTask, store: FeatureStore
) -> list[VLExample]:
    """Rows (``(location, dict)`` from :func:`laddertune.data.read_rows`) -> examples to answer.

    Raises:
        DataError: one line naming the row: no task where the checkpoint has several, a task it was not trained
            on, no text, the wrong number of images, an image not in ``store``.
    """
    out = []
    for where, row in rows:
        name = _row_task(where, row, task)
        spec = get_vl_task(name)
        text = next((row[c] for c in TEXT_COLUMNS if row.get(c) is not None), None)
        if text is None and name != "caption":
            raise DataError(f"{where}: no text: give the {name} row's {' or '.join(TEXT_COLUMNS)}")
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: the text must be a string, got {type(text).__name__}")
        images = _row_images(where, row)
        if len(images) != spec.images:
            raise DataError(f"{where}: a {name} row reads {spec.images} image(s), got {len(images)}")
        for image in images:
            if image not in store:
                raise DataError(f"{where}: image {image!r} is not in the feature file {store.path}")
            if store.shape(image)[1] != task.visual.feature_dim:
                raise DataError(
                    f"{where}: image {image!r} has {store.shape(image)[1]} features, the checkpoint reads "
                    f"{task.visual.feature_dim}"
                )
        out.append(make_example(name, text or "", "", images))
    return out


def _row_task(where: str, row: dict, task: VisionTask) -> str:
    given = row.get("task")
    if given is None:
        if len(task.tasks) > 1:
            raise DataError(
                f"{where}: no task: this checkpoint answers {', '.join(task.tasks)}; give the row's task"
            )
        return task.tasks[0]
    name = RUN_TASKS.get(given.lower()) if isinstance(given, str) else None
    if name not in task.tasks:
        raise DataError(
            f"{where}: task {given!r} is not one this checkpoint answers ({', '.join(task.tasks)})"
        )
    return name


def _row_images(where: str, row: dict) -> list[str]:
    if row.get("images") is not None:
        images = row["images"]
    elif row.get("img0") is not None or row.get("img1") is not None:
        images = [row.get("img0"), row.get("img1")]
    else:
        one = row.get("image_id", row.get("img_id"))
        images = [] if one is None else [one]
    if not isinstance(images, list) or not images:
        raise DataError(f"{where}: no images: give images (a list), image_id or img_id, or img0 and img1")
    if not all(isinstance(i, str | int) and not isinstance(i, bool) for i in images):
        raise DataError(f"{where}: image ids must be strings, got {images!r}")
    return [str(i) for i in images]


@dataclass
class VisionPredictor:
    """A vision-and-language model rebuilt from a checkpoint, with its feature file and generation settings."""

    model: torch.nn.Module
    tokenizer: object
    task: VisionTask
    store: FeatureStore
    generation: dict
    max_new_tokens: int | None
    checkpoint: Path

    @torch.inference_mode()
    def predict(
        self, examples: list[VLExample], *, batch_size: int = 32, show_progress: bool = False
    ) -> list[dict]:
        """``{"task", "answer"}`` per example, in order."""
        collate = VLCollator(self.tokenizer, self.store, max_source_length=self.task.max_source_length)
        answers = generate_answers(
            self.model, examples, collate=collate, tokenizer=self.tokenizer, batch_size=batch_size,
            generation={**self.generation, "max_new_tokens": self.max_new_tokens}, show_progress=show_progress,
            desc="predict",
        )  # fmt: skip
        return [{"task": e.task, "answer": a} for e, a in zip(examples, answers, strict=True)]


def load_vision_predictor(
    path: Path,
    task_json: dict,
    task: VisionTask,
    store: FeatureStore,
    *,
    backbone: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    generation: dict | None = None,
) -> VisionPredictor:
    """The model of checkpoint folder ``path`` (on the CPU) for its ``task``, reading features from ``store``.

    ``generation``: settings over the checkpoint's recorded ones (``num_beams``...); ``max_new_tokens``, when
    given, replaces each task's own answer length.
    """
    name = backbone or require_backbone(task_json["backbone"], path)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    method = get_method(task_json.get("method", "lst"))
    # a baseline's options are in the run's train_config.json; a side network has its own
    needs_config = not method.spec.side_network and (path.parent / CONFIG_NAME).is_file()
    options = TrainConfig.load(path.parent).method if needs_config else None
    backbone_model = load_task_backbone(name, None, HEAD, tokenizer, trust_remote_code, allow_pickle)
    model = VisionMethod(method, task.visual).load_trained(
        backbone_model, options, path, device=torch.device("cpu")
    )
    model.eval()
    overrides = generation or {}
    settings = generation_settings(task_json, overrides)
    return VisionPredictor(
        model, tokenizer, task, store, generation_kwargs(settings), overrides.get("max_new_tokens"), path
    )


def predict_vision_rows(
    path: Path, task_json: dict, task: VisionTask, rows: list, *, features: str | None, batch_size: int,
    show_progress: bool = False, **load_kw,
) -> list[dict]:  # fmt: skip
    """Answers for ``rows`` from checkpoint ``path`` (see the module docstring); ``features`` is required.

    Raises:
        ConfigError: no feature file given.
        DataError: an unreadable feature file, or a bad row (one line naming it).
    """
    if features is None:
        raise ConfigError(f"{path} answers questions on images: give their feature file (--features)")
    with FeatureStore(features) as store:
        examples = rows_to_vl_examples(rows, task, store)
        predictor = load_vision_predictor(path, task_json, task, store, **load_kw)
        return predictor.predict(examples, batch_size=batch_size, show_progress=show_progress)
