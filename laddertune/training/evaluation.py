"""Scoring: predictions for a batch, a task's metric over a split, and :func:`evaluate` for a saved checkpoint."""

from __future__ import annotations

import math
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import compute_metrics, eval_batches, make_collator, parse_prediction
from ..errors import CheckpointError, ConfigError
from ..io import verify_checksums
from ..methods import get_method
from ..vision.tasks import is_vl_run_task, per_task
from .build import load_backbone_for, seed_everything
from .config import CONFIG_NAME, TrainConfig
from .device import model_device, move_batch, resolve_device
from .generative import evaluate_generative
from .run_data import load_run_data
from .run_paths import require_backbone
from .vision_evaluation import evaluate_vision
from .vision_method import VisionMethod

GEN_TOKENS = 8  # text-to-text answers are a class id or a score such as "3.2": a few tokens


@torch.inference_mode()
def predict(model, batch: dict, spec, fmt: str, tokenizer) -> list:
    """Labels for one batch: argmax of the logits (the value, for regression), or the parsed generated text."""
    inputs = move_batch({k: v for k, v in batch.items() if k != "labels"}, model_device(model))
    if fmt == "classification":
        logits = model(**inputs).logits  # (B, num_labels)
        return logits[:, 0].tolist() if spec.is_regression else logits.argmax(-1).tolist()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    out = model.generate(  # transformers' generate: a LadderModel's, PEFT's or the backbone's
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=GEN_TOKENS,
        num_beams=1,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    if fmt == "causal":
        out = out[:, ids.shape[1] :]  # drop the prompt
    return [parse_prediction(spec, text) for text in tokenizer.batch_decode(out, skip_special_tokens=True)]


def evaluate_examples(
    model,
    examples: list[dict],
    *,
    spec,
    fmt: str,
    tokenizer,
    batch_size: int,
    max_length: int,
    show_progress: bool = False,
    desc: str = "eval",
    meter=None,
    memory_batches: int = 0,
    distributed=None,
    add_taps=None,
) -> dict:
    """Score ``model`` on ``examples`` with the task's metric (x100; ``score`` is the main number).

    Batches go longest first (less padding). With ``meter``, the first ``memory_batches`` batches are measured
    under the phase ``eval``. With ``distributed`` (a :class:`~laddertune.training.distributed.Distributed`), each
    rank predicts its share of the examples and every rank scores all the gathered predictions. With
    ``add_taps`` (from a tap cache, see :func:`~laddertune.training.tap_run.use_tap_cache`), batches carry
    the split's cached taps and the backbone does not run.
    """
    kw = dict(spec=spec, fmt=fmt, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    kw.update(show_progress=show_progress, desc=desc, meter=meter, memory_batches=memory_batches)
    kw.update(add_taps=add_taps)
    if distributed is None:
        predictions = predict_examples(model, examples, **kw)
    else:
        predictions = distributed.gather(predict_examples(model, distributed.shard(examples), **kw))
    metrics = compute_metrics(spec, predictions, [e["label"] for e in examples])
    if not spec.is_regression:  # how much of the split gets the most predicted class
        counts = Counter(p for p in predictions if p is not None)
        metrics[MAJORITY] = 100 * max(counts.values(), default=0) / len(predictions)
    return metrics


def predict_examples(
    model,
    examples: list[dict],
    *,
    spec,
    fmt: str,
    tokenizer,
    batch_size: int,
    max_length: int,
    show_progress: bool = False,
    desc: str = "eval",
    meter=None,
    memory_batches: int = 0,
    add_taps=None,
) -> list:
    """``model``'s prediction for each of ``examples``, in their order (see :func:`evaluate_examples`)."""
    collator = make_collator(tokenizer, fmt=fmt, spec=spec, max_length=max_length, generation=fmt == "causal")
    predictions: list = [None] * len(examples)
    was_training = model.training
    model.eval()
    batches = tqdm(
        eval_batches(examples, collator, batch_size),
        total=math.ceil(len(examples) / batch_size),
        desc=desc,
        disable=not show_progress,
        leave=False,
    )
    device = _device(model)
    for k, (idx, batch) in enumerate(batches):
        if add_taps is not None:
            batch = add_taps(batch)
        if device is not None and device.type != "cpu":
            batch = move_batch(batch, device)
        with meter.phase("eval") if meter is not None and k < memory_batches else nullcontext():
            for i, p in zip(idx, predict(model, batch, spec, fmt, tokenizer), strict=True):
                predictions[i] = p
    model.train(was_training)
    return predictions


def _device(model) -> torch.device | None:
    """Where the model takes its inputs: the first trainable parameter's device (the side network's for LST)."""
    for p in model.parameters():
        if p.requires_grad:
            return p.device
    return None


# The share (x100) of a split predicted as its most predicted class: a model stuck at the majority label scores the
# majority rate while having learned nothing, and the summary line says so above ONE_CLASS.
MAJORITY = "majority_prediction_percent"
ONE_CLASS = 95.0


def format_metrics(metrics: dict) -> str:
    """``score 71.48 (accuracy 71.48)``."""
    rest = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k not in ("score", MAJORITY))
    return f"score {metrics['score']:.2f}" + (f" ({rest})" if rest else "")


def evaluate(
    checkpoint: str | Path,
    *,
    data_dir: str | None = None,
    validation_file: str | None = None,
    max_eval_samples: int | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    generate: bool | None = None,
    show_progress: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device: str = "auto",
    backbone: str | None = None,
    features: str | None = None,
) -> dict:
    """Rebuild a trained model from its run folder and score it on the validation (and test) split.

    Args:
        checkpoint: a checkpoint folder (``<run>/checkpoint-best`` or ``checkpoint-last``) or a run folder (its
            ``checkpoint-best`` is used). ``train_config.json`` is read from the run folder.
        data_dir: where the data is, when not where the training run found it.
        validation_file: score this file's rows instead of the run's validation split (the run's columns and
            format; for a labelled task, its labels).
        max_eval_samples: evaluate on this many examples (default: the training run's setting).
        max_new_tokens: generated answers' longest length, in tokens (default: the run's).
        generate: generative rows: also generate answers and score them (default: as the run evaluated).
        batch_size: evaluation batch size (default: the training run's).
        trust_remote_code: let transformers run the backbone's own code. Asked of the caller, never taken from
            the run folder: a copied run folder must not be able to switch it on.
        allow_pickle: load a backbone whose weights are only pickle files (never taken from the run folder).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (not taken from the run: it may have trained elsewhere).
        backbone: load this backbone instead of the recorded one (same weights, another place).
        features: a vision-and-language run: read the image features from this file instead of the recorded
            one (its validation_file: TASK=FILE pairs for a multi-task run).

    Returns:
        ``{"checkpoint", "task", "method", "validation": metrics, "test": metrics or None}``.
    """
    path = Path(checkpoint)
    if (path / CONFIG_NAME).is_file():
        path = path / "checkpoint-best"
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint folder at {path}")
    if not (path.parent / CONFIG_NAME).is_file():
        raise CheckpointError(f"no {CONFIG_NAME} in {path.parent}: is {path} a laddertune checkpoint?")
    verify_checksums(path)
    where = resolve_device(device)
    config = TrainConfig.load(path.parent)
    config.model.trust_remote_code = trust_remote_code
    config.model.allow_pickle = allow_pickle
    config.model.backbone = backbone or require_backbone(config.model.backbone, path.parent)
    config.data.data_dir = data_dir or config.data.data_dir
    if max_eval_samples is not None:
        config.data.max_eval_samples = max_eval_samples
    vision = is_vl_run_task(config.data.task)
    if features is not None and not vision:
        raise ConfigError(f"features are read by vision-and-language runs; {path.parent} is a text one")
    if features is not None:
        config.data.features = features
    if validation_file is not None and vision:
        config.data.validation_annotations = per_task(validation_file, "validation_file", config.data.task)
    elif validation_file is not None:
        config.data.validation_file = validation_file
    if max_new_tokens is not None:
        config.generation.max_new_tokens = max_new_tokens
    if generate is not None:
        config.generation.eval_generate = generate
    data = load_run_data(config, training=False)
    seed_everything(config.optimization.seed)
    method = get_method(config.method_name)
    if data.vision is not None:  # CLIP-T5: the method's model with the image features
        method = VisionMethod(method, data.vision.visual)
    model = method.load_trained(
        load_backbone_for(config, data.spec, data.head, data.tokenizer), config.method, path, device=where
    )
    kw = {
        **data.eval_kwargs(config, show_progress),
        "batch_size": batch_size or config.optimization.eval_batch_size,
    }
    if data.vision is not None:
        validation, test = evaluate_vision(model, data.splits.validation, desc="validation", **kw), None
    elif data.generative is not None:
        validation, test = evaluate_generative(model, **kw), None
    else:
        validation = evaluate_examples(model, data.splits.validation, desc="validation", **kw)
        test = (
            None
            if data.splits.test is None
            else evaluate_examples(model, data.splits.test, desc="test", **kw)
        )
    return {
        "checkpoint": str(path),
        "task": data.spec.name,
        "method": config.method_name,
        "validation": validation,
        "test": test,
    }
