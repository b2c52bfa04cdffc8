"""The options of a vision-and-language run (``--task vqa|gqa|nlvr2|caption|vl-multitask``): the paper's CLIP-T5
settings as its defaults, and what such a run may not be given. No torch here: the command line checks a config
with it before anything loads.

The defaults (the paper's §7, see docs/reference/contracts.md#vision-and-language) fill in only the options a run does not
set, in :meth:`~laddertune.training.config.TrainConfig.from_flat`, so ``train_config.json`` records the values
that ran: r = 4 and every layer for LST (each baseline its Table 3 setting, ``PAPER_VL_OPTIONS``), lr 3e-3 (1e-4
for full fine-tuning, the paper's), weight decay 0.03, 10% warm-up, gradient clipping 5, beam 5, text inputs of 20
tokens, and without ``batch_size`` each task's own batch of the authors' multi-task run (``PAPER_VL_BATCHES``).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..fields import option_name, options_of
from ..memory.vision_settings import PAPER_VL_BATCHES, PAPER_VL_OPTIONS
from ..vision.tasks import RUN_TASK_NAMES, is_vl_run_task, per_task

VL_METHODS = ("lst", "full", "lora", "adapter", "bitfit", "prompt")
VL_LR = {"full": 1e-4}  # the paper's full fine-tuning rate (VL-Adapter's); 3e-3 for the rest
VL_DEFAULTS = {"lr": 3e-3, "weight_decay": 0.03, "max_grad_norm": 5.0, "num_beams": 5, "max_length": 20}
VL_EPOCHS = 20  # --epochs paper
# the options of a vision-and-language run, refused on a text task
VL_DATA_OPTIONS = ("features", "annotations", "validation_annotations", "task_batch_sizes")
# the text tasks' data options, refused on a vision-and-language task (which reads annotations and features)
TEXT_DATA_OPTIONS = ("train_file", "validation_file", "text_column", "text_pair_column", "label_column",
                     "problem_type", "format", "chat_template")  # fmt: skip


def vl_defaults(flat: dict) -> dict:
    """The paper's settings for a vision-and-language run, for the options ``flat`` (option names) leaves out."""
    method = flat.get("method", "lst")
    if not isinstance(method, str):
        return {}  # from_flat names what is wrong
    defaults = {**VL_DEFAULTS, "lr": VL_LR.get(method, VL_DEFAULTS["lr"])}
    if flat.get("warmup_steps") is None:
        defaults["warmup_ratio"] = 0.1
    if "batch_size" not in flat:
        defaults["task_batch_sizes"] = {task: b.batch_size for task, b in PAPER_VL_BATCHES.items()}
    defaults |= paper_method_options(method)
    return {k: v for k, v in defaults.items() if k not in flat}


def paper_method_options(method: str) -> dict:
    """The options of ``method``'s Table 3 setting that differ from the method's own defaults (LST: r = 4)."""
    paper = PAPER_VL_OPTIONS.get(method)
    if paper is None:
        return {}
    plain = type(paper)()
    return {
        option_name(f): getattr(paper, f.name)
        for f in options_of(type(paper))
        if getattr(paper, f.name) != getattr(plain, f.name)
    }


def check_vl_data(data) -> None:
    """A :class:`~laddertune.training.config.DataConfig`'s vision-and-language options: normalised (per-task
    mappings keyed by the tasks' spec names) and checked against its task."""
    if not is_vl_run_task(data.task):
        given = [name for name in VL_DATA_OPTIONS if getattr(data, name) is not None]
        if given:
            raise ConfigError(
                f"{given[0]} is an option of the vision-and-language tasks ({', '.join(RUN_TASK_NAMES)}), not of "
                f"task {data.task}"
            )
        return
    data.task = data.task.lower()
    given = [name for name in TEXT_DATA_OPTIONS if getattr(data, name) is not None]
    if given:
        raise ConfigError(
            f"{given[0]} is an option of text tasks; a vision-and-language task reads --annotations and --features"
        )
    if data.features is None:
        raise ConfigError(f"task {data.task} reads image features: give their HDF5 file (--features)")
    if data.annotations is None:
        raise ConfigError(f"task {data.task} needs its training annotations (--annotations)")
    data.annotations = per_task(data.annotations, "annotations", data.task)
    data.validation_annotations = per_task(data.validation_annotations, "validation_annotations", data.task)
    data.task_batch_sizes = per_task(data.task_batch_sizes, "task_batch_sizes", data.task, kind=int)
    extra = sorted(set(data.validation_annotations or {}) - set(data.annotations))
    if extra:
        raise ConfigError(f"validation_annotations names task {extra[0]}, which has no training annotations")


def check_vl_run(config) -> None:
    """What a vision-and-language :class:`~laddertune.training.config.TrainConfig` cannot combine."""
    name = config.method_name
    if name not in VL_METHODS:
        raise ConfigError(
            f"method {name} is not available for vision-and-language tasks; choose one of {', '.join(VL_METHODS)}"
        )
    if config.data.tap_cache is not None:
        raise ConfigError(
            "tap_cache is for text tasks: a vision-and-language run reads the image features instead"
        )
    if config.devices.device_map is not None:
        raise ConfigError("device_map is not supported for vision-and-language tasks yet")
    if getattr(config.method, "init", "random") == "fisher":
        raise ConfigError(
            "init fisher is not supported for vision-and-language tasks (its calibration pass reads text only); "
            "use random or magnitude"
        )


def vl_run_settings(values: dict) -> dict:
    """``values`` (option names, flat) with the vision-and-language defaults under them when its task is one."""
    if not is_vl_run_task(values.get("task")):
        return values
    return {**vl_defaults(values), **values}
