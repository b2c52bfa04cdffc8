"""The four vision-and-language tasks of the paper's Table 3, their prompts, and the two data layouts read here.

Each example becomes a :class:`VLExample`: the text the T5 backbone reads (``"<prompt> <text>"``), the target it
learns to generate, the image ids whose features the side network reads (two for NLVR2), and what the metric
compares against.

Layouts (``load_examples(task, path)``):

* **VL-Adapter / VL-T5 annotation JSON** (a list of records, as their ``*_data.py`` read them):
  VQA ``{"img_id", "sent", "label": {answer: score}, "answers": [{"answer": ...}] or [str]}``;
  GQA ``{"img_id", "sent", "label": {answer: score}}``; NLVR2 ``{"img0", "img1", "sent", "label": 0|1}``;
  COCO captions, Karpathy's ``dataset_coco.json``
  ``{"images": [{"filename", "split", "sentences": [{"raw"}]}]}`` (image id = file stem; ``split`` filtered by
  ``split=``).
* **Plain JSONL**, one object per line: ``{"images": [id, ...], "text": str, "target": str, "answers": [str]}``
  (``answers`` optional: the references, default ``[target]``; ``text`` empty for captions).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class VLTaskSpec:
    """One task: its prompt, metric (:func:`laddertune.vision.metrics.vl_metrics`) and images per example."""

    name: str
    prompt: str
    metric: str
    images: int = 1
    max_target_tokens: int = 10


VL_TASKS = {
    "vqa": VLTaskSpec("vqa", "vqa:", "vqa"),
    "gqa": VLTaskSpec("gqa", "gqa:", "exact_match"),
    "nlvr": VLTaskSpec("nlvr", "nlvr:", "exact_match", images=2, max_target_tokens=3),
    "caption": VLTaskSpec("caption", "caption:", "cider", max_target_tokens=20),
}


# A vision-and-language run's task (``--task``): one of the four, or several trained jointly (their annotation files
# name them). NLVR2 is spelled both ways; runs record the spec's name, ``nlvr``.
RUN_TASKS = {"vqa": "vqa", "gqa": "gqa", "nlvr2": "nlvr", "nlvr": "nlvr", "caption": "caption"}
MULTITASK = "vl-multitask"
RUN_TASK_NAMES = ("vqa", "gqa", "nlvr2", "caption", MULTITASK)  # as help and messages list them


def is_vl_run_task(task) -> bool:
    """Whether ``task`` (a run's ``--task``) is a vision-and-language task."""
    return isinstance(task, str) and (task.lower() in RUN_TASKS or task.lower() == MULTITASK)


def per_task(value, option: str, run_task: str, kind: type = str) -> dict | None:
    """A per-task option of a vision-and-language run as ``{spec name: value}``.

    Takes a mapping (``{"vqa": ..., "nlvr2": ...}``), its command-line text (``vqa=a.json,nlvr2=b.json``), or one
    value, which a single-task run reads as its task's (``a.json``; ``vl-multitask`` needs the pairs). ``kind``:
    ``str`` (a file: a path-like becomes its text) or ``int`` (a positive number; text is parsed).

    Raises:
        ConfigError: one line naming ``option``: an unknown task, a task another than the run's, a bad value.
    """
    if value is None:
        return None
    single = RUN_TASKS.get(run_task.lower()) if isinstance(run_task, str) else None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        value = _parse_pairs(value.strip(), option, single)
    elif not isinstance(value, dict):
        value = {single: value} if single and kind is int else value
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{option} must be TASK=VALUE pairs such as vqa=..., got {value!r}")
    out = {}
    for task, item in value.items():
        name = RUN_TASKS.get(task.lower()) if isinstance(task, str) else None
        if name is None:
            raise ConfigError(f"{option}: unknown task {task!r}; tasks: {', '.join(RUN_TASK_NAMES[:-1])}")
        if single is not None and name != single and kind is str:
            raise ConfigError(f"{option} names task {task}, but this run trains {run_task}")
        if name in out:
            raise ConfigError(f"{option} names task {name} twice")
        out[name] = _task_value(item, option, kind)
    return {t: out[t] for t in VL_TASKS if t in out}  # the tasks' own order


def _parse_pairs(text: str, option: str, single: str | None) -> dict:
    """``vqa=a.json,gqa=b.json`` -> ``{"vqa": "a.json", "gqa": "b.json"}``; one value -> ``{single: value}``."""
    items = [item.strip() for item in text.split(",")]
    pairs = [item.partition("=") for item in items]
    if all(sep and key.strip().lower() in RUN_TASKS for key, sep, _ in pairs):
        return {key.strip(): rest.strip() for key, _, rest in pairs}
    if single is None:
        raise ConfigError(
            f"{option}: a vl-multitask run names each task's value, TASK=VALUE,... (vqa=a.json,gqa=b.json); got "
            f"{text!r}"
        )
    return {single: text}


def _task_value(item, option: str, kind: type):
    if kind is int:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ConfigError(f"{option}: each value must be a positive integer, got {item!r}")
        return item
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    if not isinstance(item, str) or not item:
        raise ConfigError(f"{option}: each value must be a file name, got {item!r}")
    return item


@dataclass
class VLExample:
    task: str
    source: str  # the prompted text the backbone reads
    target: str  # what training teaches
    image_ids: list[str]
    references: object = None  # answers (VQA), the answer (GQA/NLVR2) or captions (COCO)
    extra: dict = field(default_factory=dict)


def get_vl_task(name: str) -> VLTaskSpec:
    if name not in VL_TASKS:
        raise DataError(f"unknown vision-language task {name!r}; choose from {', '.join(VL_TASKS)}")
    return VL_TASKS[name]


def make_example(task: str, text: str, target: str, image_ids: list[str], references=None) -> VLExample:
    spec = get_vl_task(task)
    if len(image_ids) != spec.images:
        raise DataError(f"{task} examples have {spec.images} image(s), got {len(image_ids)}: {image_ids}")
    source = f"{spec.prompt} {text}".strip()
    if references is None:
        references = [target] if spec.metric in ("vqa", "cider") else target
    return VLExample(task, source, target, list(image_ids), references)


def _best_answer(label: dict) -> str:
    return max(label.items(), key=lambda kv: kv[1])[0]


def _from_record(task: str, r: dict) -> list[VLExample]:
    if task in ("vqa", "gqa"):
        label = r.get("label") or {}
        answers = [a["answer"] if isinstance(a, dict) else a for a in r.get("answers", [])]
        if not label and not answers:
            return []  # test-split questions: no answer to learn or score
        target = _best_answer(label) if label else answers[0]
        refs = (answers or [target]) if task == "vqa" else target
        return [make_example(task, r["sent"], target, [r["img_id"]], refs)]
    if task == "nlvr":
        target = "true" if int(r["label"]) == 1 else "false"
        return [make_example(task, r["sent"], target, [r["img0"], r["img1"]])]
    raise DataError(f"no record layout for {task}")


def _karpathy_captions(data: dict, split: str | None) -> list[VLExample]:
    out = []
    for img in data["images"]:
        if split is not None and img.get("split") not in _split_names(split):
            continue
        captions = [s["raw"] for s in img["sentences"]]
        image_id = Path(img["filename"]).stem
        out.append(make_example("caption", "", captions[0], [image_id], captions))
    return out


def _split_names(split: str) -> set[str]:
    return {"train", "restval"} if split == "train" else {split}  # Karpathy's train uses restval too


def caption_training_examples(examples: list[VLExample]) -> list[VLExample]:
    """One training example per reference caption (VL-T5 trains on every caption of an image)."""
    return [make_example("caption", "", c, e.image_ids, e.references) for e in examples for c in e.references]


def load_examples(task: str, path: str | Path, *, split: str | None = None) -> list[VLExample]:
    """Read ``task``'s examples from a VL-Adapter annotation JSON (``.json``) or plain JSONL (``.jsonl``)."""
    get_vl_task(task)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            return [
                make_example(task, r.get("text", ""), r["target"], r["images"], r.get("answers"))
                for r in rows
            ]
        data = json.loads(text)
        if task == "caption":
            return _karpathy_captions(data, split)
        return [e for r in data for e in _from_record(task, r)]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path} is not a {task} file in a known layout: {type(e).__name__} {e}") from None
