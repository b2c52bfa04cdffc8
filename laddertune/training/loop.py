"""The training loop, :func:`train`: one run, read top to bottom as its phases.

A run, in order, each phase one method of :class:`Run`: check the output folder and seed everything
(``prepare_output``); load the data (``prepare_data``: the splits, the format and head, the tokenizer, the batcher);
build the model (``build_model``: LST or a baseline); the optimizer and schedule (``make_optimizer``: AdamW over the
trainable parameters only, linear warm-up and decay); start fresh or resume from ``checkpoint-last``
(``start_or_resume``); the epoch loop, written out in :func:`train` (a seeded shuffle per epoch; ``step`` per
optimizer step, over ``gradient_accumulation_steps`` batches; ``after_step``: logs, validation every ``eval_steps``,
checkpoints every ``save_steps``; ``end_epoch``: validation and checkpoints; ``max_steps`` may end the last epoch
part-way); ``finish`` (the best validation's weights on the test set when the protocol has one, then
``results.json``). Every count (steps, the schedule, ``log_every``, ``save_steps``, ``eval_steps``) is of optimizer
steps.

A vision-and-language task (``vqa``, ``gqa``, ``nlvr2``, ``caption``, ``vl-multitask``) runs this same loop: its data
and per-task batches (:mod:`.vision_data`), its method's CLIP-T5 model (:mod:`.vision_method`) and its scoring
(:mod:`.vision_evaluation`) plug into the phases.

What a run writes into ``output_dir``::

    train_config.json     the TrainConfig as given
    metrics.jsonl         one JSON object per logged training step and per evaluation, after a "start" record
    checkpoint-last/      weights + optimizer, scheduler, RNG and data-order state (for resume)
    checkpoint-last.old/  the checkpoint before it, kept until the run finishes (resume falls back to it)
    checkpoint-best/      weights of the best validation
    results.json          written last: metrics, parameter counts, peak memory, timing, versions, config

Weights: LST saves only its side network (``LadderModel.save_pretrained``); a baseline saves only its trainable
parameters (``trainable.safetensors``). Each checkpoint folder is written under a temporary name with a
``SHA256SUMS`` list, then swapped in as a whole (:mod:`laddertune.training.checkpoint`). No pickle.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..errors import ConfigError
from ..memory import PeakMemoryMeter
from ..methods import get_method
from ..vision.tasks import is_vl_run_task
from .build import (
    build_model,
    epoch_batches,
    parameter_counts,
    seed_everything,
)
from .checkpoint import find_checkpoint, load_weights, save_best, save_checkpoint
from .config import TrainConfig
from .device import move_batch, resolve_device
from .distributed import DataParallelHooks, Distributed
from .evaluation import evaluate_examples, format_metrics
from .generative import SAMPLES_NAME, evaluate_generative
from .optimizer import adamw8bit_class, make_optimizer
from .placement import PlacementHooks
from .precision import Precision
from .prediction import task_record
from .results import run_summary, write_results
from .run_data import RunData, Schedule, load_run_data
from .run_dir import MetricsLog, check_output, claim_output, release_output, truncate_metrics
from .run_state import RunState, Timing
from .step import TrainingDivergedError, train_step
from .tap_run import use_tap_cache
from .vision_evaluation import evaluate_vision
from .vision_method import VisionMethod

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    *,
    show_progress: bool = False,
    on_record: Callable[[dict], None] | None = None,
    metric: Callable[[list[str], list], dict[str, float]] | None = None,
) -> dict:
    """Train and evaluate one run; returns what it writes to ``results.json``.

    Args:
        config: the run. ``config.run.output_dir`` is filled in when it is None.
        show_progress: draw tqdm progress bars (the CLI turns them on; the library only logs).
        on_record: called with every record appended to ``metrics.jsonl`` (training logs, evaluations).
        metric: generative rows with ``eval_generate``: a custom metric ``(generated answers, references) ->
            {name: value}``, reported with exact match, token F1 and ROUGE-L.

    Raises:
        ConfigError, DataError, CheckpointError: a problem with the settings, the data or the output folder.
        TrainingDivergedError: the loss or gradient became NaN or infinite (the message names the step).
    """
    run = Run(config, show_progress, on_record, metric)
    try:
        return _train(run)
    finally:
        if run.out is not None:
            release_output(run.out)  # the folder's lock, however the run ended


def _train(run: Run) -> dict:
    """The phases, then the epochs of optimizer steps."""
    config = run.config
    run.prepare_output()  # nothing in the folder changes before the data and the model are known good
    run.prepare_data()
    run.build_model()
    run.make_optimizer()
    run.start_or_resume()
    run.open_tap_cache()

    run.model.train()
    train_set, state, optim = run.data.splits.train, run.state, config.optimization
    k = optim.gradient_accumulation_steps  # micro-batches per optimizer step
    for epoch in range(state.epoch, run.schedule.epochs):
        batches = run.data.epoch_batches(optim.batch_size, optim.seed, epoch)
        # where the epoch (re)starts: always a step boundary, since checkpoints are written between steps
        start = state.next_batch if epoch == state.epoch else 0
        with run.progress(math.ceil(len(batches) / k), start // k, epoch) as bar:
            for b in range(start, len(batches), k):
                group = batches[b : b + k]
                micro = [run.data.collate([train_set[i] for i in run.shard(g)]) for g in group]
                loss = run.step(micro, epoch)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                done = b + len(group) == len(batches) or run.out_of_steps
                run.after_step(epoch, next_batch=b + len(group), epoch_done=done)
                if done:
                    break
        run.end_epoch(epoch)
        if run.out_of_steps:  # max_steps: the last epoch may stop part-way
            break
    return run.finish()


# ------------------------------------------------------------------------------------------------- the phases


class Run(DataParallelHooks, PlacementHooks):
    """One run's state, built phase by phase; :func:`train` calls the phases and holds the loop."""

    def __init__(
        self,
        config: TrainConfig,
        show_progress: bool,
        on_record: Callable[[dict], None] | None,
        metric: Callable | None = None,
    ):
        # what the run is configured with
        self.config, self.show_progress, self.on_record, self.metric = (
            config,
            show_progress,
            on_record,
            metric,
        )
        self.method = get_method(config.method_name)  # builds, saves and loads what the method trains
        self.dist = Distributed.from_env()  # None in a single process; see laddertune.training.distributed
        # where it writes (prepare_output, start_or_resume)
        self.out: Path | None = None
        self.log: MetricsLog | None = None
        self.task: dict | None = None  # task.json of every checkpoint (for predict)
        # what it is made of (prepare_data ... make_optimizer)
        self.device: torch.device | None = None
        self.data: RunData | None = None
        self.eval_kw: dict = {}
        self.eval_taps: dict = {}  # split -> batcher wrapper, for a tap-cached classification run
        self.model = None
        self.counts: dict | None = None
        self.schedule: Schedule | None = None
        self.optimizer = self.scheduler = None
        self.precision: Precision | None = None
        # what it has done and measured
        self.state = RunState()
        self.timing = Timing()
        self.losses: list[float] = []  # since the last logged step
        self.init_meter: PeakMemoryMeter | None = None
        self.meter: PeakMemoryMeter | None = None

    def prepare_output(self) -> None:
        """Check ``output_dir`` (filled in when None) without changing it, and seed everything."""
        config = self.config
        if config.run.output_dir is None:
            if config.run.resume:
                raise ConfigError("resume needs output_dir (--output-dir): the folder of the run to continue")
            config.run.output_dir = config.default_output_dir()
        if (
            self.dist is not None and config.data.tap_cache
        ):  # ranks would build the same entry at once: not yet shared
            raise ConfigError(
                "--tap-cache is not supported with several processes yet: run it in one process"
            )
        if self.dist is not None and is_vl_run_task(config.data.task):
            raise ConfigError("vision-and-language tasks train in one process: several are not supported yet")
        self.out = check_output(config)
        self.device = resolve_device(config.devices.device)  # a missing GPU fails here, before anything loads
        self.method.require(self.device)
        if self.dist is not None:  # one device per rank (the local rank's GPU on NCCL)
            self.device = self.dist.device
        if config.optimization.optimizer == "adamw8bit":  # a missing bitsandbytes fails before anything loads
            adamw8bit_class(self.device)
        seed_everything(config.optimization.seed)

    def prepare_data(self) -> None:
        """Load the data (a labelled task, or generative rows), choose the format and head for the backbone,
        build the tokenizer and batcher."""
        self.data = load_run_data(self.config)
        if self.data.vision is not None:  # CLIP-T5: the method's model also reads the image features
            self.method = VisionMethod(self.method, self.data.vision.visual)
        self.eval_kw = {**self.data.eval_kwargs(self.config, self.show_progress), "distributed": self.dist}
        self.task = task_record(self.config, self.data)  # task.json of every checkpoint (for predict)

    def build_model(self) -> None:
        """The method's model. Its build is measured as the phase "init" (loading, pruning, Fisher).

        On CPU the meter records every op: the Fisher pass (one backward per example) would run several times
        slower under it and hold its trace in RAM, so on CPU a Fisher init is timed but not metered.
        """
        config, data = self.config, self.data
        calibration = None
        fisher = getattr(config.method, "init", None) == "fisher"
        if self.method.needs_calibration(config.method):  # training batches in an order of their own
            # a Fisher init's order follows the run's seed; a tap projection's alone does not (seed 0), so that runs
            # of every seed fit the same projection and share one tap cache entry
            seed = config.optimization.seed if fisher else 0
            order = epoch_batches(len(data.splits.train), config.optimization.batch_size, seed, -1)
            calibration = (
                move_batch(data.collate([data.splits.train[i] for i in b]), self.device) for b in order
            )
        if config.run.memory_steps and (not fisher or self.device.type == "cuda"):
            self.init_meter = PeakMemoryMeter(device=self.device)
        with self.init_meter.phase("init") if self.init_meter else nullcontext():
            self.model = build_model(
                config,
                data.spec,
                data.head,
                data.tokenizer,
                calibration,
                device=self.device,
                method=self.method,
            )
        if config.devices.device_map:
            self.place_backbone()
        self.counts = parameter_counts(self.model)
        logger.info("%s: %d of %d parameters train (%.3f%%)", self.method.name, *self.counts.values())

    def make_optimizer(self) -> None:
        """AdamW (or 8-bit AdamW, --optimizer) over the trainable parameters only, linear warm-up and decay; the meter of the steps."""
        config, data = self.config, self.data
        batches = data.batch_count(config.optimization.batch_size)
        epochs, steps_per_epoch, total = config.resolved_steps(
            len(data.splits.train), data.spec.epochs, batches
        )
        self.schedule = Schedule(
            epochs,
            steps_per_epoch,
            total,
            config.resolved_warmup(total),
            config.resolved_lr(_model_type(self.model)),
        )
        params = list(self.method.trainable(self.model).values())
        self.optimizer = make_optimizer(
            params,
            config.optimization.optimizer,
            lr=self.schedule.lr,
            weight_decay=config.optimization.weight_decay,
            device=self.device,
        )
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, self.schedule.warmup, total)
        if self.dist is not None:
            self.dist.wrap(self.model)
        # "train" and "eval" count what a GPU would hold: the weights and gradients and the optimizer state.
        if config.run.memory_steps:
            self.meter = PeakMemoryMeter(self.model, self.optimizer, device=self.device)
        self.precision = Precision(config.devices.precision, self.device)

    def start_or_resume(self) -> None:
        """Claim the output folder and start fresh, or restore ``checkpoint-last``."""
        config, out = self.config, self.out
        if self.is_main:
            claim_output(config, out)
        self.log = MetricsLog(out / "metrics.jsonl", self.on_record if self.is_main else None, self.is_main)
        resumed = self.resume_on_every_rank() if config.run.resume else None
        fingerprint = self.data.fingerprint()
        if resumed is not None:
            resume_from, saved = resumed
            self.state = RunState.from_dict(saved, str(resume_from))
            recorded = self.state.data_fingerprint
            if recorded is not None and recorded != fingerprint and not config.run.force:
                raise ConfigError(
                    f"cannot resume {out}: its training or validation data differ from these (fingerprint "
                    f"{recorded}, now {fingerprint}); --force resumes on these"
                )
            self.precision.load_state_dict(self.state.grad_scaler or {})
            if self.is_main:
                truncate_metrics(self.log.path, self.state.step)
            logger.info("resumed from %s at step %d", resume_from, self.state.step)
        else:
            if config.run.resume:
                logger.warning("nothing to resume in %s; starting a new run", out)
            if self.is_main:
                self.log.path.unlink(missing_ok=True)
        self.state.data_fingerprint = fingerprint
        if self.is_main:
            config.save(out)
        self.timing.resumed = resumed is not None
        if resumed is not None:
            self.log(
                {
                    "type": "resume",
                    "step": self.state.step,
                    "epoch": self.state.epoch + 1,
                    **run_summary(self),
                }
            )
        else:
            self.log({"type": "start", "step": 0, **run_summary(self)})

    def open_tap_cache(self) -> None:
        """With ``tap_cache``: find or build the taps of the training examples (and, for classification, of the
        evaluation splits); training and evaluation batches then carry them."""
        if self.config.data.tap_cache:
            self.eval_taps = use_tap_cache(self.config, self.model, self.data, self.log)

    def progress(self, total: int, initial: int, epoch: int):
        desc = f"epoch {epoch + 1}/{self.schedule.epochs}"
        return tqdm(total=total, initial=initial, desc=desc, disable=not self.show_progress, leave=False)

    @property
    def out_of_steps(self) -> bool:
        """The run has done its ``max_steps``."""
        return self.state.step >= self.schedule.total_steps

    def step(self, batches: list[dict], epoch: int) -> float:
        """One optimizer step over ``batches`` (its micro-batches), timed, and measured for the first
        ``memory_steps`` after this process's first."""
        timing, config = self.timing, self.config
        measured = self.meter is not None and 1 <= timing.process_steps <= config.run.memory_steps
        t0 = time.perf_counter()
        try:
            with self.meter.phase("train") if measured else nullcontext():
                loss = train_step(
                    self.model,
                    batches,
                    self.optimizer,
                    self.scheduler,
                    config.optimization.max_grad_norm,
                    self.precision,
                    head=self.data.head,
                    distributed=self.dist,
                    move=self.to_model_device,
                )
        except TrainingDivergedError as e:
            self._stop_diverged(e, epoch)
        seconds = time.perf_counter() - t0
        self.state.step += 1
        self.state.train_seconds += seconds
        timing.process_steps += 1
        timing.last_seconds = seconds
        if timing.process_steps > 1 and not measured:  # leave out the warm-up and the profiled steps
            timing.timed_steps += 1
            timing.timed_seconds += seconds
        self.losses.append(loss)
        return loss

    def after_step(self, epoch: int, next_batch: int, epoch_done: bool) -> None:
        """Log the mean loss every ``log_every`` steps and at the epoch's end; validate every ``eval_steps``;
        checkpoint every ``save_steps`` (the epoch's end does both in :meth:`end_epoch`)."""
        config, step = self.config, self.state.step
        if step % config.run.log_every == 0 or epoch_done:
            record = {"type": "train", "step": step, "epoch": epoch + 1}
            record["loss"] = sum(self.losses) / len(self.losses)
            record["lr"] = self.scheduler.get_last_lr()[0]
            record["seconds_per_step"] = self.timing.last_seconds
            record["train_seconds"] = self.state.train_seconds  # cumulative, over resumes too
            self.log(record)
            self.losses = []
        if config.run.eval_steps and step % config.run.eval_steps == 0 and not epoch_done:
            self.validate(epoch)
        if config.run.save_steps and step % config.run.save_steps == 0 and not epoch_done:
            self.state.epoch, self.state.next_batch = epoch, next_batch
            self._save_last()

    def end_epoch(self, epoch: int) -> None:
        """Validate, then write ``checkpoint-last`` (the next epoch starts there)."""
        self.validate(epoch)
        self.state.epoch, self.state.next_batch = epoch + 1, 0
        self._save_last()
        if self.dist is not None:
            self.dist.barrier()  # checkpoint-best is complete before any rank may read it (finish)

    def validate(self, epoch: int) -> None:
        """Score the validation split; keep the weights of the best validation so far in ``checkpoint-best``."""
        config, state = self.config, self.state
        t0 = time.perf_counter()
        memory_kw = (
            {"meter": self.meter, "memory_batches": config.run.memory_steps} if not state.history else {}
        )
        metrics = self.evaluate("validation", **memory_kw)
        record = {"type": "eval", "split": "validation", "epoch": epoch + 1, "step": state.step}
        record.update(metrics=metrics, eval_seconds=time.perf_counter() - t0)
        state.history.append(record)
        self.log(record)
        where = f"epoch {epoch + 1}/{self.schedule.epochs} step {state.step}"
        logger.info("%s: validation %s", where, format_metrics(metrics))
        if state.best is None or metrics["score"] > state.best["score"]:
            state.best = {
                "epoch": epoch + 1,
                "step": state.step,
                "score": metrics["score"],
                "metrics": metrics,
            }
            if self.is_main:
                save_best(self.out / "checkpoint-best", self.model, self.method, self.task)

    def finish(self) -> dict:
        """The best epoch's weights on the test set (when the protocol has one), then ``results.json``."""
        test, best = None, self.state.best
        if self.data.splits.test is not None and best is not None:
            load_weights(self.model, self.out / "checkpoint-best", self.method)
            test = self.evaluate("test")
            self.log(
                {
                    "type": "eval",
                    "split": "test",
                    "epoch": best["epoch"],
                    "step": best["step"],
                    "metrics": test,
                }
            )
        results = write_results(self, test, write=self.is_main)
        if self.dist is not None:
            self.dist.close()
        return results

    def evaluate(self, split: str, **memory_kw) -> dict:
        """Score ``split`` (``validation`` or ``test``): a labelled task by its metric, generative rows by their
        loss (and generated answers). ``eval_kw`` carries ``distributed=``: every rank predicts its share and all
        score the gathered predictions."""
        if self.data.vision is not None:  # generated answers, each task's metric
            return evaluate_vision(self.model, getattr(self.data.splits, split), desc=split, **self.eval_kw)
        if self.data.generative is not None:
            samples = self.out / SAMPLES_NAME if self.is_main else None
            return evaluate_generative(
                self.model,
                desc=split,
                samples_path=samples,
                custom_metric=self.metric,
                **memory_kw,
                **self.eval_kw,
            )
        examples = getattr(self.data.splits, split)
        add_taps = self.eval_taps.get(split)
        return evaluate_examples(
            self.model, examples, desc=split, add_taps=add_taps, **memory_kw, **self.eval_kw
        )

    def _save_last(self) -> None:
        if not self.is_main:
            return
        if self.precision.scaler is not None:  # fp16: the loss scale resumes where it was
            self.state.grad_scaler = self.precision.state_dict()
        save_checkpoint(
            self.out / "checkpoint-last",
            self.model,
            self.method,
            self.optimizer,
            self.scheduler,
            self.state.to_dict(),
            self.task,
        )

    def _stop_diverged(self, error: TrainingDivergedError, epoch: int):
        step = self.state.step + 1
        self.log({"type": "diverged", "step": step, "epoch": epoch + 1, "reason": str(error)})
        last = find_checkpoint(self.out)
        kept = f"kept the last good checkpoint, {last}" if last else "no checkpoint had been written yet"
        raise TrainingDivergedError(f"step {step} (epoch {epoch + 1}): {error}; stopped and {kept}") from None


def _model_type(model) -> str | None:
    """The backbone's model_type (LST's per-family learning-rate defaults read it)."""
    backbone = getattr(model, "backbone", model)
    return getattr(getattr(backbone, "config", None), "model_type", None)
