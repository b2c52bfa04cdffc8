"""Prediction on new text from a checkpoint alone: ``task.json`` says how to read rows and name the answers.

Every checkpoint folder a run writes holds ``task.json`` (:func:`task_record`): the task spec (text columns, class
names, the text-to-text prompt keys), the data format, the maximum length, the backbone's name as the user gave it
(an alias such as ``minilm`` stays the alias) and the method. Nothing in it is a path of the machine that trained,
so a copied run folder predicts anywhere its backbone can be loaded (``backbone=`` overrides the recorded one).
An LST checkpoint needs nothing beyond its own folder; a baseline also reads ``train_config.json`` from the run
folder above it (to rebuild the method).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core import LadderModel, MultiSideModel
from ..core.backbones import load_tokenizer
from ..data import eval_batches, make_collator, parse_prediction, read_rows, spec_from_dict, spec_to_dict
from ..data.generative_task import GenerativeTask
from ..errors import CheckpointError, ConfigError, DataError
from ..io import atomic_write_text, check_writable, load_json, resolve_portable, verify_checksums
from ..methods import get_method, method_names, method_spec
from .build import HEADS, load_task_backbone
from .checkpoint import TASK_NAME
from .config import CONFIG_NAME, TrainConfig
from .evaluation import GEN_TOKENS
from .generative_prediction import GenerativePredictor, generation_settings, generative_task
from .run_paths import require_backbone
from .vision_prediction import VisionTask, predict_vision_rows, vision_task

TASK_VERSION = 1


def task_record(config: TrainConfig, data) -> dict:
    """What ``task.json`` holds: how to turn rows into batches and outputs into answers (for generative rows: how
    they are rendered, and the generation settings, which prediction may override)."""
    record = {
        "version": TASK_VERSION,
        "task": data.spec.name,
        "format": data.fmt,
        "max_length": config.data.max_length,
        "backbone": config.model.backbone,
        "method": config.method_name,
    }
    if data.vision is not None:  # the tasks and the image features' shape, and how it generates
        record["head"] = data.head
        record["vision"] = data.vision.record()
        record["generation"] = dataclasses.asdict(config.generation)
    elif data.generative is not None:
        record["head"] = data.head
        record["generative"] = data.generative.task.to_dict()
        record["generation"] = dataclasses.asdict(config.generation)
    else:
        record["spec"] = spec_to_dict(data.spec)
    return record


@dataclass
class Predictor:
    """A model rebuilt from a checkpoint, with what it needs to read rows and name its answers."""

    model: torch.nn.Module
    tokenizer: object
    spec: object
    fmt: str
    max_length: int
    checkpoint: Path
    sides: dict | None = None  # name -> task spec, when ``model`` is a MultiSideModel

    @torch.inference_mode()
    def predict(
        self, examples: list[dict], *, batch_size: int = 32, show_progress: bool = False
    ) -> list[dict]:
        """One answer dict per example, in input order (batches go longest first to pad little)."""
        collator = make_collator(
            self.tokenizer,
            fmt=self.fmt,
            spec=self.spec,
            max_length=self.max_length,
            generation=self.fmt == "causal",
        )
        answers: list = [None] * len(examples)
        self.model.eval()
        batches = eval_batches(examples, collator, batch_size)
        total = math.ceil(len(examples) / batch_size)
        for idx, batch in tqdm(batches, total=total, desc="predict", disable=not show_progress, leave=False):
            for i, answer in zip(idx, self._batch(batch), strict=True):
                answers[i] = answer
        return answers

    def _batch(self, batch: dict) -> list[dict]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        names = self.spec.label_names
        if self.fmt == "classification" and self.sides:  # several side networks, one backbone pass
            outputs = self.model.forward_all(**inputs)
            per_side = {
                name: classification_answers(outputs[name].logits, spec) for name, spec in self.sides.items()
            }
            return [
                {name: answers[i] for name, answers in per_side.items()}
                for i in range(len(inputs["input_ids"]))
            ]
        if self.fmt == "classification":
            return classification_answers(self.model(**inputs).logits, self.spec)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        gen = self.model.generate(  # transformers' generate: a LadderModel's, PEFT's or the backbone's
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=GEN_TOKENS,
            num_beams=1,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if self.fmt == "causal":
            gen = gen[:, ids.shape[1] :]  # drop the prompt
        out = []
        for text in self.tokenizer.batch_decode(gen, skip_special_tokens=True):
            parsed = parse_prediction(self.spec, text)
            if self.spec.is_regression or parsed is None:
                out.append({"text": text, "value" if self.spec.is_regression else "label": parsed})
            else:
                out.append(
                    {"text": text, "label": names[parsed] if names else str(parsed), "label_id": parsed}
                )
        return out


def rows_to_examples(rows: list[tuple[str, dict]], spec) -> list[dict]:
    """Raw rows (``(location, dict)`` from :func:`laddertune.data.read_rows`) -> examples the collator reads.

    Raises:
        DataError: a row lacks one of the text columns the model was trained on, or holds a non-text value.
    """
    cols, out = spec.text_columns, []
    dummy = 0.0 if spec.is_regression else 0  # the collators want a label; predictions ignore it
    for where, row in rows:
        texts = []
        for col in cols:
            if col not in row or row[col] is None:
                raise DataError(f"{where}: missing column {col!r} (this model reads {', '.join(cols)})")
            if not isinstance(row[col], str | int | float) or isinstance(row[col], bool):
                raise DataError(f"{where}: column {col!r} must hold text, got {type(row[col]).__name__}")
            texts.append(str(row[col]))
        out.append({"text": texts[0], "text_pair": texts[1] if len(texts) > 1 else None, "label": dummy})
    return out


def classification_answers(logits: torch.Tensor, spec) -> list[dict]:
    """(B, num_labels) logits -> ``{"value"}`` (regression) or ``{"label", "label_id", "probabilities"}`` per row."""
    logits = logits.float()
    if spec.is_regression:
        return [{"value": v} for v in logits[:, 0].tolist()]
    names, out = spec.label_names, []
    for row in logits.softmax(-1).tolist():
        best = max(range(len(row)), key=row.__getitem__)
        out.append(
            {
                "label": names[best] if names else str(best),
                "label_id": best,
                "probabilities": _named(row, names),
            }
        )
    return out


def _named(values: list[float], names) -> dict:
    return {(names[i] if names else str(i)): v for i, v in enumerate(values)}


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A run folder -> its ``checkpoint-best``; a checkpoint folder stays. Raises CheckpointError when neither."""
    path = Path(checkpoint)
    if (path / CONFIG_NAME).is_file() and (path / "checkpoint-best").is_dir():
        path = path / "checkpoint-best"
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint folder at {path}")
    if not (path / TASK_NAME).is_file():
        raise CheckpointError(
            f"{path} has no {TASK_NAME}: not a checkpoint folder, or written by a laddertune before predict existed"
        )
    return path


def read_task(path: Path) -> tuple[dict, object]:
    """``task.json`` of checkpoint ``path`` and the task spec it holds; a malformed file is a CheckpointError."""
    try:
        task = load_json(path / TASK_NAME)
        if not isinstance(task, dict) or "backbone" not in task:
            raise ConfigError("it lacks the backbone")
        _check_task(task)
        task["backbone"] = resolve_portable(task["backbone"], path)
        if "vision" in task:  # image features and questions: vision_prediction
            return task, vision_task(task)
        if "generative" in task:  # generative rows: rendered as GenerativeTask says, no label spec
            if task.get("head") not in ("causal_lm", "seq2seq_lm"):
                raise ConfigError("a generative checkpoint's head must be causal_lm or seq2seq_lm")
            return task, generative_task(task, path)
        if task.get("format") not in HEADS:
            raise ConfigError("it lacks a known format")
        return task, spec_from_dict(task.get("spec"))
    except ConfigError as e:
        raise CheckpointError(f"{path / TASK_NAME} is malformed: {e}") from None


def _check_task(task: dict) -> None:
    """The fields of task.json other than the spec: their types and ranges (a hand edit fails here, in one line)."""
    if not isinstance(task["backbone"], str) or not task["backbone"]:
        raise ConfigError(f"backbone must be a name or a folder, got {task['backbone']!r}")
    method = task.get("method", "lst")
    if method not in method_names():
        raise ConfigError(f"unknown method {method!r}; one of {', '.join(method_names())}")
    length = task.get("max_length", 128)
    if isinstance(length, bool) or not isinstance(length, int) or not 8 <= length <= 1_000_000:
        raise ConfigError(f"max_length must be an integer from 8 to 1000000, got {length!r}")


def load_predictor(
    checkpoint: str | Path,
    *,
    backbone: str | None = None,
    trust_remote_code: bool = False,
    generation: dict | None = None,
    allow_pickle: bool = False,
) -> Predictor | GenerativePredictor:
    """Rebuild the model of a checkpoint (a run folder: its ``checkpoint-best``) for prediction.

    Args:
        checkpoint: a checkpoint folder, or a run folder.
        backbone: load this backbone instead of the recorded one (same weights, another place).
        trust_remote_code: let transformers run the backbone's own code; never read from the checkpoint.
        generation: a generative checkpoint: generation settings over its recorded ones (``max_new_tokens``,
            ``num_beams``, ``do_sample``, ``temperature``, ``top_p``; None values keep the recorded one).

    Raises:
        CheckpointError: no checkpoint there, a corrupt one, or one made for another backbone.
    """
    path = resolve_checkpoint(checkpoint)
    verify_checksums(path)
    task, spec = read_task(path)
    if isinstance(spec, VisionTask):
        raise ConfigError(
            f"{path} answers questions on images: predict_file(..., features=) or "
            "laddertune.training.vision_prediction.load_vision_predictor reads their features"
        )
    name, fmt = backbone or require_backbone(task["backbone"], path), task["format"]
    head = task.get("head") or HEADS[fmt]
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    method = get_method(task.get("method", "lst"))
    # a baseline's options (freeze_layers...) are in the run's train_config.json; a side network has its own
    needs_config = not method.spec.side_network and (path.parent / CONFIG_NAME).is_file()
    config = TrainConfig.load(path.parent) if needs_config else None
    backbone_model = load_task_backbone(name, spec, head, tokenizer, trust_remote_code, allow_pickle)
    model = method.load_trained(backbone_model, config and config.method, path, device=torch.device("cpu"))
    model.eval()  # no dropout in the side network (a freshly built LadderModel is in train mode)
    max_length = int(task.get("max_length", 128))
    if "generative" in task:
        settings = generation_settings(task, generation or {})
        return GenerativePredictor(
            model, tokenizer, generative_task(task, path), head, max_length, settings, path
        )
    return Predictor(model, tokenizer, spec, fmt, max_length, path)


def load_multi_predictor(
    checkpoints: list,
    *,
    backbone: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Predictor:
    """Several LST classification checkpoints of one backbone on ONE backbone pass per batch (:class:`MultiSideModel`).

    Each row's answer is ``{name: answer}``, ``name`` being the run folder's name (the checkpoint folder's, when
    given directly). The checkpoints must read the same text columns at the same max length.

    Raises:
        CheckpointError: a checkpoint made for another backbone (its fingerprint differs from the first's backbone).
        ConfigError: checkpoints that are not LST classification, or read other columns or lengths.
    """
    paths = [resolve_checkpoint(c) for c in checkpoints]
    first = load_predictor(
        paths[0], backbone=backbone, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle
    )
    if first.fmt != "classification" or not isinstance(first.model, LadderModel):
        raise ConfigError(
            "several checkpoints share one backbone pass for LST classification checkpoints only"
        )
    multi = MultiSideModel(first.model.backbone)
    sides = {}
    for path in paths:
        verify_checksums(path)
        task, spec = read_task(path)
        name = path.parent.name if (path.parent / CONFIG_NAME).is_file() else path.name
        if name in sides:
            name = f"{name}-{len(sides)}"
        if not method_spec(task.get("method", "lst")).reads_taps or task["format"] != "classification":
            raise ConfigError(f"{path}: only LST classification checkpoints can share a backbone pass")
        if (
            spec.text_columns != first.spec.text_columns
            or int(task.get("max_length", 128)) != first.max_length
        ):
            raise ConfigError(
                f"{path} reads columns {list(spec.text_columns)} at max length {task.get('max_length')}; "
                f"{paths[0]} reads {list(first.spec.text_columns)} at {first.max_length}: one input for all needs the same"
            )
        multi.load_side(name, path)  # refuses a side network trained on another backbone
        sides[name] = spec
    return Predictor(multi.eval(), first.tokenizer, first.spec, first.fmt, first.max_length, paths[0], sides)


def check_output_file(output_path: str | Path, input_path: str | Path) -> None:
    """Refuse, in one line, an output that is a folder or the input file itself, or a place that is not writable.

    Raises:
        ConfigError: the output is a folder, or the same file as the input (the rows would be replaced by their
            predictions).
        OutputError: its folder is not writable (read-only, no permission).
    """
    out = Path(output_path)
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder: give the name of a file to write")
    if out.exists() and Path(input_path).exists() and os.path.samefile(out, input_path):
        raise ConfigError(
            f"output {out} is the input file: its rows would be replaced by their predictions; write elsewhere"
        )
    check_writable(out.parent, f"the folder of output {out}")


def predict_file(
    checkpoint: str | Path | list,
    input_path: str | Path,
    output_path: str | Path | None = None,
    *,
    batch_size: int = 32,
    backbone: str | None = None,
    trust_remote_code: bool = False,
    show_progress: bool = False,
    generation: dict | None = None,
    allow_pickle: bool = False,
    features: str | Path | None = None,
) -> list[dict]:
    """Predict every row of a JSONL/CSV/TSV file; with ``output_path``, write one JSON line per row (atomically:
    a full disk leaves the old file, if any, and raises :class:`~laddertune.errors.OutputError`).

    A vision-and-language checkpoint answers each row's question on its images, whose features are read from
    ``features`` (:mod:`laddertune.training.vision_prediction`: the rows' columns, ``{"task", "answer"}`` each).

    With several checkpoints (a list), they share one backbone pass (:func:`load_multi_predictor`) and each row's
    answer maps each checkpoint's name to its answer. The input is read and checked completely before the model is loaded, so a bad file fails fast and nothing is
    written. Returns the answers in input order.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if output_path is not None:  # before anything loads: a bad place fails in seconds, not after the model
        check_output_file(output_path, input_path)
    many = checkpoint if isinstance(checkpoint, list | tuple) else [checkpoint]
    path = resolve_checkpoint(many[0])
    rows, (task_json, task) = read_rows(input_path), read_task(path)
    kw = {"backbone": backbone, "trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle}
    if features is not None and not isinstance(task, VisionTask):
        raise ConfigError(f"features are read by vision-and-language checkpoints; {path} is a text one")
    if len(many) > 1 and isinstance(task, VisionTask | GenerativeTask):
        raise ConfigError(
            "several checkpoints share one backbone pass for LST classification checkpoints only"
        )
    if isinstance(task, VisionTask):  # questions on images in, generated answers out
        verify_checksums(path)
        answers = predict_vision_rows(
            path, task_json, task, rows, features=features, batch_size=batch_size, show_progress=show_progress,
            generation=generation, **kw,
        )  # fmt: skip
    else:
        if isinstance(task, GenerativeTask):  # prompts in, generated text out
            predictor = load_predictor(path, **kw, generation=generation)
            examples = predictor.examples(rows)
        else:
            examples = rows_to_examples(rows, task)
            predictor = (
                load_predictor(path, **kw) if len(many) == 1 else load_multi_predictor(list(many), **kw)
            )
        answers = predictor.predict(examples, batch_size=batch_size, show_progress=show_progress)
    if output_path is not None:
        atomic_write_text(Path(output_path), "".join(json.dumps(a) + "\n" for a in answers))
    return answers
