"""``results.json``: what a finished run reports (metrics, parameter counts, peak memory, timing, versions)."""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import peft
import torch
import transformers

from ..io import atomic_write_text
from .optimizer import state_bytes
from .run_dir import finished_run


def write_results(run, test: dict | None, write: bool = True) -> dict:
    """Assemble a finished :class:`~laddertune.training.loop.Run`'s results, write ``results.json`` last, and drop
    the resume fallback (``write=False``: a data-parallel rank other than 0 only assembles). Returns them."""
    config, data, state, timing, schedule = run.config, run.data, run.state, run.timing, run.schedule
    optim = config.optimization
    best, init_meter, meter = state.best, run.init_meter, run.meter
    memory = meter.report().to_dict() if meter is not None else None
    if memory is not None and init_meter is not None:  # no init phase when Fisher ran unprofiled (CPU)
        memory["phases"] = {**init_meter.report().to_dict()["phases"], **memory["phases"]}
    train_peak = memory["phases"].get("train", {}).get("peak_bytes") if memory else None
    run_config = config.to_run_dict(config.run.output_dir)  # local paths relative to the run folder
    results = {
        "task": data.spec.name,
        "method": config.method_name,
        "backbone": run_config["backbone"],
        "metrics": {
            "validation": [{k: v for k, v in r.items() if k != "type"} for r in state.history],
            "best_epoch": best["epoch"] if best else None,
            "best_validation": best["metrics"] if best else None,
            "test": test,
        },
        "parameters": run.counts,
        "memory": {
            "peak_train_bytes": train_peak,
            "peak_train_gib": None if train_peak is None else round(train_peak / 1024**3, 4),
            "measured_steps": config.run.memory_steps,
            "measurement": measurement(memory, timing),
            "phases": memory,
        },
        "timing": {
            "wall_seconds": time.perf_counter() - timing.started,
            "train_seconds": state.train_seconds,
            "steps": state.step,
            "seconds_per_step": timing.seconds_per_step,
            "timed_steps": timing.timed_steps,
            "resumed": timing.resumed,
        },
        "effective": {
            "epochs": schedule.epochs,
            "lr": schedule.lr,
            "warmup_steps": schedule.warmup,
            "total_steps": schedule.total_steps,
            "steps_per_epoch": schedule.steps_per_epoch,
            "max_steps": optim.max_steps,
            "gradient_accumulation_steps": optim.gradient_accumulation_steps,
            "examples_per_step": optim.batch_size * optim.gradient_accumulation_steps,
            "eval_steps": config.run.eval_steps,
            "format": data.fmt,
            "head": data.head,
        },
        "compute": {
            "device": str(run.device),
            "gpu": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else None,
            **run.precision.describe(),
            **run.method.compute_settings(_resolved_options(run, config.method)),
            "optimizer": config.optimization.optimizer,
            "optimizer_state_bytes": state_bytes(run.optimizer),
        },
        "data": {
            **data.splits.summary(relative_to=config.run.output_dir),
            **({"encoding": data.generative.stats} if data.generative is not None else {}),
        },
        "distributed": {
            "world_size": run.dist.world_size if run.dist else 1,
            "backend": run.dist.backend if run.dist else None,
        },
        "versions": versions(),
        "config": run_config,
    }
    if not write:
        return results
    out = Path(config.run.output_dir)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    finished_run(out)  # a finished run resumes from nothing: checkpoint-last.old goes, and the folder's lock
    return results


def run_summary(run) -> dict:
    """What a :class:`~laddertune.training.loop.Run` is about to do, for the record ``metrics.jsonl`` starts with
    (``type: start``) and that each ``resume`` record repeats: method, task, the chosen format and head, the
    examples and the optimizer steps (the command line prints it as its first line)."""
    config, data, schedule = run.config, run.data, run.schedule
    optim = config.optimization
    summary = {
        "method": config.method_name,
        "task": data.spec.name,
        "format": data.fmt,
        "head": data.head,
        "examples": {"train": len(data.splits.train), "validation": len(data.splits.validation)},
        "epochs": schedule.epochs,
        "steps_per_epoch": schedule.steps_per_epoch,
        "total_steps": schedule.total_steps,
        "examples_per_step": optim.batch_size * optim.gradient_accumulation_steps,
        "gradient_accumulation_steps": optim.gradient_accumulation_steps,
    }
    if data.vision is not None:  # a step's batch is one task's, of that task's size
        summary["task_batch_sizes"] = dict(data.splits.batch_sizes)
    return summary


def versions() -> dict:
    """The versions a result was produced with (``laddertune``'s from the installed package's metadata)."""
    try:
        own = importlib.metadata.version("laddertune")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        own = "unknown"
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "laddertune": own,
    }


def measurement(memory: dict | None, timing) -> dict | None:
    """How the peak was measured and what it cost: the meter's method, and the mean seconds of a measured
    training step next to an unmeasured one (on CPU the profiler records every op of a measured step)."""
    if memory is None:
        return None
    train = memory["phases"].get("train")
    measured = train["seconds"] / train["entries"] if train and train["entries"] else None
    plain = timing.seconds_per_step
    return {
        "method": memory["method"],
        "device": memory["device"],
        "seconds_per_measured_step": measured,
        "seconds_per_unmeasured_step": plain,
        "overhead_ratio": measured / plain if measured and plain else None,
    }


def _resolved_options(run, options):
    """The method's options as the model resolved them (a LadderModel's config: side checkpointing and the heads'
    other defaults filled in), else as configured."""
    model = getattr(run.model, "module", run.model)  # DistributedDataParallel wraps it
    return getattr(model, "ladder_config", None) or options
