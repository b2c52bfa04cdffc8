"""The training loop, :func:`train`, and :func:`evaluate` for a saved checkpoint.

A run, in order: seed everything; load the data (:mod:`laddertune.data`), the backbone with the head the format
needs, and its tokenizer; build the model (:func:`~laddertune.get_ladder_model` for LST,
:func:`~laddertune.baselines.prepare_baseline` otherwise); AdamW over the trainable parameters only, linear warm-up
and decay, gradient clipping; per epoch, a seeded shuffle of the training set, then the validation score. The best
epoch on validation is evaluated on the test set when the protocol has one.

What a run writes into ``output_dir``::

    train_config.json     the TrainConfig as given
    metrics.jsonl         one JSON object per logged training step and per evaluation
    checkpoint-last/      weights + optimizer, scheduler, RNG and data-order state (for resume)
    checkpoint-last.old/  the checkpoint before it, kept until the run finishes (resume falls back to it)
    checkpoint-best/      weights of the best epoch on validation
    results.json          written last: metrics, parameter counts, peak memory, timing, versions, config

Weights: LST saves only its side network (``LadderModel.save_pretrained``); a baseline saves only its trainable
parameters (``trainable.safetensors``). Each file is written atomically and a checkpoint folder is written under a
temporary name with a ``SHA256SUMS`` list, then swapped in as a whole, so a crash leaves the previous checkpoint or
the new one. Resuming checks the list and falls back to ``checkpoint-last.old`` when the newest checkpoint is corrupt.
No pickle: tensors go to safetensors, the rest to JSON.

Speed on CPU: LST's step is dominated by the frozen backbone's forward, which the model already runs in eval mode
under ``no_grad``; batches are padded to their longest example; evaluation sorts examples by length and runs under
``torch.inference_mode``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import (
    atomic_write_text,
    verify_checksums,
)
from .errors import CheckpointError, ConfigError, LadderTuneError
from .run_checkpoint import (  # noqa: F401  (re-exported: the trainer's public names before the split)
    BASELINE_WEIGHTS,
    STATE_JSON,
    STATE_TENSORS,
    checkpoint_candidates,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    resume_checkpoint,
    save_best,
    save_checkpoint,
    save_weights,
    trainable_parameters,
)
from .run_config import CONFIG_NAME, TrainConfig

logger = logging.getLogger(__name__)

GEN_TOKENS = 8  # text-to-text answers are a class id or a score such as "3.2": a few tokens
RUN_FILES = ("results.json", "metrics.jsonl", CONFIG_NAME, "checkpoint-last", "checkpoint-best")
ENCODER_ONLY = ("bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2")
HEADS = {"classification": "sequence_classification", "text2text": "seq2seq_lm", "causal": "causal_lm"}


class TrainingDivergedError(LadderTuneError):
    """The loss or the gradient became NaN or infinite; the run stopped and kept its last good checkpoint."""


# ---------------------------------------------------------------------------------------------- building blocks


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (model init and dropout depend on torch's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch as example indices: a shuffle seeded by (seed, epoch) alone.

    Seeding per epoch makes any epoch's order reproducible without replaying the earlier ones, which is what
    resuming in the middle of an epoch needs. The last batch may be smaller.
    """
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch + 1]).generate_state(1)[0]))
    order = torch.randperm(n, generator=g).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def choose_format(backbone: str, fmt: str | None, trust_remote_code: bool = False) -> tuple[str, str]:
    """(data format, backbone head): text2text for encoder-decoders (T5), classification otherwise."""
    import transformers

    from .backbones import resolve_backbone

    src = resolve_backbone(backbone)
    try:
        kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
        cfg = transformers.AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"cannot read the config of backbone {backbone!r}: {first}") from None
    seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
    fmt = fmt or ("text2text" if seq2seq else "classification")
    if fmt == "text2text" and not seq2seq:
        raise ConfigError(
            f"format text2text needs an encoder-decoder backbone (T5); {backbone!r} is {cfg.model_type}"
        )
    if fmt == "causal" and (seq2seq or cfg.model_type in ENCODER_ONLY):
        raise ConfigError(f"format causal needs a decoder-only backbone; {backbone!r} is {cfg.model_type}")
    return fmt, HEADS[fmt]


def load_backbone_for(config: TrainConfig, spec, head: str, tokenizer):
    """The backbone with ``head`` (``num_labels`` from the task for classification)."""
    from .backbones import load_backbone

    kwargs = {"num_labels": spec.num_labels} if head == "sequence_classification" else {}
    backbone = load_backbone(config.backbone, head, trust_remote_code=config.trust_remote_code, **kwargs)
    if (
        backbone.config.pad_token_id is None
    ):  # decoder-only classifiers find the last token through the pad id
        backbone.config.pad_token_id = tokenizer.pad_token_id
    return backbone


def build_model(config: TrainConfig, spec, head: str, tokenizer, calibration=None):
    """Load the backbone and build the method's model around it (``calibration``: batches for Fisher init)."""
    backbone = load_backbone_for(config, spec, head, tokenizer)
    if config.method != "lst":
        from .baselines import BaselineConfig, prepare_baseline

        return prepare_baseline(backbone, config.method, BaselineConfig(freeze_layers=config.freeze_layers))
    from . import LadderConfig, get_ladder_model

    ladder = LadderConfig(
        reduction_factor=config.reduction_factor,
        side_layers=config.side_layers,
        init=config.init,
        pruning_chain=config.pruning_chain,
        fisher_samples=config.fisher_samples,
        backbone_dropout=config.backbone_dropout,
    )
    try:
        return get_ladder_model(backbone, ladder, calibration_data=calibration)
    except ModuleNotFoundError as e:  # pruning initialisation lives in its own module
        if e.name and e.name.startswith("laddertune"):
            raise ConfigError(f"init={config.init!r} needs {e.name}, which this install lacks") from None
        raise


def parameter_counts(model) -> dict:
    """Trainable and total parameter counts and the trainable share in percent."""
    params = list(model.parameters())
    trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    return {"trainable": trainable, "total": total, "trainable_percent": 100 * trainable / total}


# ------------------------------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict(model, batch: dict, spec, fmt: str, tokenizer) -> list:
    """Labels for one batch: argmax of the logits (the value, for regression), or the parsed generated text."""
    from .model import LadderModel
    from .tasks import parse_prediction

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if fmt == "classification":
        logits = model(**inputs).logits  # (B, num_labels)
        return logits[:, 0].tolist() if spec.is_regression else logits.argmax(-1).tolist()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if isinstance(model, LadderModel):
        out = model.generate(ids, mask, max_new_tokens=GEN_TOKENS, num_beams=1)
    else:
        out = model.generate(
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
) -> dict:
    """Score ``model`` on ``examples`` with the task's metric (x100; ``score`` is the main number).

    Batches go longest first (less padding). With ``meter``, the first ``memory_batches`` batches are measured
    under the phase ``eval``.
    """
    from .data import eval_batches, make_collator
    from .metrics import compute_metrics

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
    for k, (idx, batch) in enumerate(batches):
        with meter.phase("eval") if meter is not None and k < memory_batches else nullcontext():
            for i, p in zip(idx, predict(model, batch, spec, fmt, tokenizer), strict=True):
                predictions[i] = p
    model.train(was_training)
    return compute_metrics(spec, predictions, [e["label"] for e in examples])


def format_metrics(metrics: dict) -> str:
    """``score 71.48 (accuracy 71.48)``."""
    rest = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k != "score")
    return f"score {metrics['score']:.2f}" + (f" ({rest})" if rest else "")


# --------------------------------------------------------------------------------------------------- the loop


def train_step(model, batch: dict, optimizer, scheduler, max_grad_norm: float) -> float:
    """One optimisation step; returns the loss. A NaN/inf loss or gradient raises :class:`TrainingDivergedError`
    before the optimizer touches the weights."""
    loss = model(**batch).loss
    if not torch.isfinite(loss):
        raise TrainingDivergedError(f"the loss is {loss.item()}")
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf"))
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDivergedError(f"the gradient norm is {norm.item()}")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def train(
    config: TrainConfig, *, show_progress: bool = False, on_record: Callable[[dict], None] | None = None
) -> dict:
    """Train and evaluate one run; returns what it writes to ``results.json``.

    Args:
        config: the run. ``config.output_dir`` is filled in when it is None.
        show_progress: draw tqdm progress bars (the CLI turns them on; the library only logs).
        on_record: called with every record appended to ``metrics.jsonl`` (training logs, evaluations).

    Raises:
        ConfigError, DataError, CheckpointError: a problem with the settings, the data or the output folder.
        TrainingDivergedError: the loss or gradient became NaN or infinite (the message names the step).
    """
    from transformers import get_linear_schedule_with_warmup

    from .backbones import load_tokenizer
    from .data import load_splits, make_collator
    from .memory import PeakMemoryMeter

    t_start = time.perf_counter()
    if config.output_dir is None:
        if config.resume:
            raise ConfigError("resume needs output_dir (--output-dir): the folder of the run to continue")
        config.output_dir = config.default_output_dir()
    out = _check_output(config)  # nothing in the folder changes before the data and the model are known good
    seed_everything(config.seed)
    splits = load_splits(config.task, **config.data_kwargs())
    spec, train_set = splits.spec, splits.train
    fmt, head = choose_format(config.backbone, config.format, config.trust_remote_code)
    tokenizer = load_tokenizer(config.backbone, trust_remote_code=config.trust_remote_code)
    collate = make_collator(tokenizer, fmt=fmt, spec=spec, max_length=config.max_length)
    calibration = None
    if config.method == "lst" and config.init == "fisher":  # training batches in an order of their own
        order = epoch_batches(len(train_set), config.batch_size, config.seed, epoch=-1)
        calibration = (collate([train_set[i] for i in b]) for b in order)
    # Phases are measured apart: "init" (loading, pruning, Fisher) with every live tensor as its baseline; "train"
    # and "eval" count what a GPU would hold: the model's weights and gradients and the optimizer state.
    # On CPU the meter records every op: the Fisher pass (one backward per example) would run several times slower
    # under it and hold its trace in RAM, so on CPU a Fisher init is timed but not metered.
    init_meter = PeakMemoryMeter(device="cpu") if config.memory_steps and config.init != "fisher" else None
    with init_meter.phase("init") if init_meter else nullcontext():
        model = build_model(config, spec, head, tokenizer, calibration)
    counts = parameter_counts(model)
    logger.info(
        "%s: %d of %d parameters train (%.3f%%)",
        config.method,
        counts["trainable"],
        counts["total"],
        counts["trainable_percent"],
    )

    epochs = config.resolved_epochs(spec.epochs)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = epochs * steps_per_epoch
    warmup, lr = config.resolved_warmup(total_steps), config.resolved_lr()
    params = list(trainable_parameters(model).values())
    optimizer = torch.optim.AdamW(
        params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    meter = PeakMemoryMeter(model, optimizer, device="cpu") if config.memory_steps else None

    # -- start fresh, or from checkpoint-last ---------------------------------------------------------------------
    _claim_output(config, out)
    state = {"step": 0, "epoch": 0, "next_batch": 0, "best": None, "history": [], "train_seconds": 0.0}
    metrics_path = out / "metrics.jsonl"
    resumed = resume_checkpoint(out, model, config.method, optimizer, scheduler) if config.resume else None
    resume_from = None
    if resumed is not None:
        resume_from, state = resumed
        _truncate_metrics(metrics_path, state["step"])
        logger.info("resumed from %s at step %d", resume_from, state["step"])
    else:
        if config.resume:
            logger.warning("nothing to resume in %s; starting a new run", out)
        metrics_path.unlink(missing_ok=True)
    config.save(out)

    def log(record: dict) -> None:
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if on_record is not None:
            on_record(record)

    if resume_from is not None:
        log({"type": "resume", "step": state["step"], "epoch": state["epoch"] + 1})
    eval_kw = {
        "spec": spec,
        "fmt": fmt,
        "tokenizer": tokenizer,
        "batch_size": config.eval_batch_size,
        "max_length": config.max_length,
        "show_progress": show_progress,
    }
    step, process_steps, timed_steps, timed_seconds, losses = state["step"], 0, 0, 0.0, []
    model.train()
    for epoch in range(state["epoch"], epochs):
        batches = epoch_batches(len(train_set), config.batch_size, config.seed, epoch)
        start = state["next_batch"] if epoch == state["epoch"] else 0
        bar = tqdm(
            total=len(batches),
            initial=start,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not show_progress,
            leave=False,
        )
        for b in range(start, len(batches)):
            batch = collate([train_set[i] for i in batches[b]])
            # this process's first step warms up (allocates the optimizer state); the next memory_steps are measured
            measured = meter is not None and 1 <= process_steps <= config.memory_steps
            t0 = time.perf_counter()
            try:
                with meter.phase("train") if measured else nullcontext():
                    loss = train_step(model, batch, optimizer, scheduler, config.max_grad_norm)
            except TrainingDivergedError as e:
                log({"type": "diverged", "step": step + 1, "epoch": epoch + 1, "reason": str(e)})
                last = find_checkpoint(out)
                kept = (
                    f"kept the last good checkpoint, {last}" if last else "no checkpoint had been written yet"
                )
                raise TrainingDivergedError(
                    f"step {step + 1} (epoch {epoch + 1}): {e}; stopped and {kept}"
                ) from None
            seconds = time.perf_counter() - t0
            step, process_steps = step + 1, process_steps + 1
            state["train_seconds"] += seconds
            if (
                process_steps > 1 and not measured
            ):  # time per step leaves out the warm-up and the profiled steps
                timed_steps, timed_seconds = timed_steps + 1, timed_seconds + seconds
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if step % config.log_every == 0 or b + 1 == len(batches):
                log(
                    {
                        "type": "train",
                        "step": step,
                        "epoch": epoch + 1,
                        "loss": sum(losses) / len(losses),
                        "lr": scheduler.get_last_lr()[0],
                        "seconds_per_step": seconds,
                    }
                )
                losses = []
            if config.save_steps and step % config.save_steps == 0 and b + 1 < len(batches):
                state.update(step=step, epoch=epoch, next_batch=b + 1)
                save_checkpoint(out / "checkpoint-last", model, config.method, optimizer, scheduler, state)
        bar.close()

        # -- end of epoch: validate, keep the best weights, checkpoint ---------------------------------------------
        t0 = time.perf_counter()
        memory_kw = {"meter": meter, "memory_batches": config.memory_steps} if not state["history"] else {}
        metrics = evaluate_examples(model, splits.validation, desc="validation", **memory_kw, **eval_kw)
        record = {
            "type": "eval",
            "split": "validation",
            "epoch": epoch + 1,
            "step": step,
            "metrics": metrics,
            "eval_seconds": time.perf_counter() - t0,
        }
        state["history"].append(record)
        log(record)
        logger.info("epoch %d/%d: validation %s", epoch + 1, epochs, format_metrics(metrics))
        if state["best"] is None or metrics["score"] > state["best"]["score"]:
            state["best"] = {"epoch": epoch + 1, "step": step, "score": metrics["score"], "metrics": metrics}
            save_best(out / "checkpoint-best", model, config.method)
        state.update(step=step, epoch=epoch + 1, next_batch=0)
        save_checkpoint(out / "checkpoint-last", model, config.method, optimizer, scheduler, state)

    # -- the best epoch's weights on the test set ----------------------------------------------------------------------
    test, best = None, state["best"]
    if splits.test is not None and best is not None:
        load_weights(model, out / "checkpoint-best", config.method)
        test = evaluate_examples(model, splits.test, desc="test", **eval_kw)
        log({"type": "eval", "split": "test", "epoch": best["epoch"], "step": best["step"], "metrics": test})
    memory = meter.report().to_dict() if meter is not None else None
    if memory is not None and init_meter is not None:  # no init phase when Fisher ran unprofiled (CPU)
        memory["phases"] = {**init_meter.report().to_dict()["phases"], **memory["phases"]}
    train_peak = memory["phases"].get("train", {}).get("peak_bytes") if memory else None
    results = {
        "task": spec.name,
        "method": config.method,
        "backbone": config.backbone,
        "metrics": {
            "validation": [{k: v for k, v in r.items() if k != "type"} for r in state["history"]],
            "best_epoch": best["epoch"] if best else None,
            "best_validation": best["metrics"] if best else None,
            "test": test,
        },
        "parameters": counts,
        "memory": {
            "peak_train_bytes": train_peak,
            "peak_train_gib": None if train_peak is None else round(train_peak / 1024**3, 4),
            "measured_steps": config.memory_steps,
            "phases": memory,
        },
        "timing": {
            "wall_seconds": time.perf_counter() - t_start,
            "train_seconds": state["train_seconds"],
            "steps": step,
            "seconds_per_step": timed_seconds / timed_steps if timed_steps else None,
            "timed_steps": timed_steps,
            "resumed": resume_from is not None,
        },
        "effective": {
            "epochs": epochs,
            "lr": lr,
            "warmup_steps": warmup,
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "format": fmt,
            "head": head,
        },
        "data": splits.summary(),
        "versions": _versions(),
        "config": config.to_dict(),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    shutil.rmtree(out / "checkpoint-last.old", ignore_errors=True)  # a finished run resumes from nothing
    return results


def _check_output(config: TrainConfig) -> Path:
    """Check ``output_dir`` without changing it: a finished or unfinished run is replaced only with ``overwrite``
    (or resumed), and resumed only with the same settings."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder")
    finished, started = (out / "results.json").exists(), find_checkpoint(out) is not None
    if finished and not config.overwrite:
        hint = "nothing to resume" if config.resume else "pass --overwrite to replace it"
        raise ConfigError(f"{out} already holds a finished run (results.json); {hint}")
    if started and not (config.overwrite or config.resume):
        raise ConfigError(f"{out} holds an unfinished run: --resume continues it, --overwrite starts over")
    if config.resume and (out / CONFIG_NAME).is_file():
        diff = config.differences(TrainConfig.load(out))
        if diff:
            raise ConfigError(f"cannot resume {out} with other settings: {', '.join(diff)} differ")
    return out


def _claim_output(config: TrainConfig, out: Path) -> None:
    """Create ``out``; with ``overwrite``, first remove the previous run's files (only those)."""
    if config.overwrite:  # remove the run's own files only, never anything else in the folder
        for name in RUN_FILES + tuple(
            f"checkpoint-{k}.{s}" for k in ("last", "best") for s in ("old", "tmp")
        ):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output_dir {out}: {e.strerror or e}") from None


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop the records written after the checkpoint's step: that work is done again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if record.get("step", 0) <= step and record.get("type") != "diverged":
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def _versions() -> dict:
    import peft
    import transformers

    from . import __version__

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "laddertune": __version__,
    }


# -------------------------------------------------------------------------------------------------- evaluation


def evaluate(
    checkpoint: str | Path,
    *,
    data_dir: str | None = None,
    max_eval_samples: int | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    trust_remote_code: bool = False,
) -> dict:
    """Rebuild a trained model from its run folder and score it on the validation (and test) split.

    Args:
        checkpoint: a checkpoint folder (``<run>/checkpoint-best`` or ``checkpoint-last``) or a run folder (its
            ``checkpoint-best`` is used). ``train_config.json`` is read from the run folder.
        data_dir: where the data is, when not where the training run found it.
        max_eval_samples: evaluate on this many examples (default: the training run's setting).
        batch_size: evaluation batch size (default: the training run's).
        trust_remote_code: let transformers run the backbone's own code. Asked of the caller, never taken from
            the run folder: a copied run folder must not be able to switch it on.

    Returns:
        ``{"checkpoint", "task", "method", "validation": metrics, "test": metrics or None}``.
    """
    from .backbones import load_tokenizer
    from .data import load_splits
    from .model import LadderModel

    path = Path(checkpoint)
    if (path / CONFIG_NAME).is_file():
        path = path / "checkpoint-best"
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint folder at {path}")
    if not (path.parent / CONFIG_NAME).is_file():
        raise CheckpointError(f"no {CONFIG_NAME} in {path.parent}: is {path} a laddertune checkpoint?")
    verify_checksums(path)
    config = TrainConfig.load(path.parent)
    config.trust_remote_code = trust_remote_code
    config.data_dir = data_dir or config.data_dir
    config.max_eval_samples = max_eval_samples if max_eval_samples is not None else config.max_eval_samples
    splits = load_splits(config.task, **{**config.data_kwargs(), "max_train_samples": None})
    fmt, head = choose_format(config.backbone, config.format, config.trust_remote_code)
    tokenizer = load_tokenizer(config.backbone, trust_remote_code=config.trust_remote_code)
    seed_everything(config.seed)
    if config.method == "lst":
        model = LadderModel.from_pretrained(load_backbone_for(config, splits.spec, head, tokenizer), path)
    else:
        model = build_model(config, splits.spec, head, tokenizer)
        load_weights(model, path, config.method)
    kw = {
        "spec": splits.spec,
        "fmt": fmt,
        "tokenizer": tokenizer,
        "max_length": config.max_length,
        "batch_size": batch_size or config.eval_batch_size,
        "show_progress": show_progress,
    }
    validation = evaluate_examples(model, splits.validation, desc="validation", **kw)
    test = evaluate_examples(model, splits.test, desc="test", **kw) if splits.test is not None else None
    return {
        "checkpoint": str(path),
        "task": splits.spec.name,
        "method": config.method,
        "validation": validation,
        "test": test,
    }
