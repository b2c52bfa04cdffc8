"""`TrainConfig`: everything one training run needs, in sections, validated at construction.

A run is configured by six sections, each a dataclass whose fields are declared once (type, default, bounds and
help text: :mod:`laddertune.fields`): :class:`DataConfig` (the task and its data), :class:`ModelConfig` (the
backbone), the method's own options (a :class:`~laddertune.core.config.LadderConfig` for LST and its ablations,
:mod:`laddertune.baselines.options` for the baselines), :class:`OptimizationConfig`, :class:`RunConfig` (what the
run writes) and :class:`DeviceConfig`. ``laddertune train``'s flags are generated from these declarations.

On disk (``train_config.json``, ``results.json``'s ``config``) and in ``--config`` files a configuration is one flat
mapping keyed by the options' names, which are also the flags' names (``lora_rank`` is ``--lora-rank``); sections
may also be written nested (``{"optimization": {"lr": 1e-3}}``). Files of laddertune 0.1, which listed every
method's options, load as before.

Defaults that depend on the run are left as ``None`` here and resolved by :meth:`TrainConfig.resolved_lr`,
:meth:`TrainConfig.resolved_epochs` and :meth:`TrainConfig.resolved_warmup`, so that ``train_config.json`` records
what the user asked for and ``results.json`` what actually ran.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..core.compute import OPTIMIZERS, PRECISIONS, check_device_name
from ..core.config import LADDER_METHODS, LEGACY_NONE, LadderConfig
from ..data.generative import PROMPT_FORMATS
from ..data.layouts import LAYOUTS
from ..errors import ConfigError
from ..fields import check_fields, opt, option_name, options_of
from ..io import load_json, save_json
from ..methods.registry import MethodSpec, method_names, method_spec
from ..vision.tasks import is_vl_run_task
from .run_paths import moved_folder, relative_paths, resolved_paths, same_path
from .vision_options import check_vl_data, check_vl_run, vl_run_settings

CONFIG_NAME = "train_config.json"
PROTOCOLS = ("dev", "paper")
# A labelled task's formats (its label as a class, or as text for a T5 / a decoder LM), then the layouts of
# generative data (laddertune.data.layouts), whose head is the backbone's LM head.
LABEL_FORMATS = ("classification", "text2text", "causal")
FORMATS = (*LABEL_FORMATS, *LAYOUTS)
PROBLEM_TYPES = ("regression", "single_label_classification")
TAP_DTYPES = ("float32", "bfloat16", "float16")
PAPER_WARMUP = 500
PATHS = ("backbone", "data_dir", "train_file", "validation_file", "output_dir", "tap_cache", "features",
         "annotations", "validation_annotations")  # fmt: skip
# Options that may differ between a run and its resumption: they say how to run, not what to train.
RESUME_FREE = (
    "overwrite",
    "resume",
    "force",
    "output_dir",
    "data_dir",
    "save_steps",
    "log_every",
    "device",
    "tap_cache",
)
# What a file written before an option existed means by its absence: LST runs saved before the final shortcut
# trained without it, and before side_layer_stride with a side layer on every backbone layer.
LEGACY_DEFAULTS = {"lst": {"final_shortcut": False, "side_layer_stride": 1}}
# Training loads every backbone in float32: for LST there, an unset backbone_dtype is float32.
TRAINING_DEFAULTS = {"backbone_dtype": "float32"}


def _epochs(text: str) -> int | None:
    """``--epochs``: a whole number, or ``paper`` for the task's own count."""
    if text == "paper":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number or 'paper', got {text!r}") from None


@dataclass
class DataConfig:
    """What to train on."""

    task: str | None = None
    """A GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte), custom: your train_file (None: custom when there
    is a train_file), or a vision-and-language task on image features (vqa, gqa, nlvr2, caption, or vl-multitask:
    the tasks its annotations name, trained jointly), whose unset options take the paper's CLIP-T5 settings (r 4, lr
    3e-3, weight decay 0.03, 10% warm-up, clipping 5, beam 5, 20-token inputs, per-task batches)."""
    format: str | None = opt(None, choices=FORMATS)
    """How the data is read and learned. A labelled task: classification (a classification head), text2text (the
    label as text, T5) or causal (the label as text after the input, decoder LMs). Generative rows, learned by the
    backbone's LM head: prompt_completion, alpaca, chat or text. None: the file's columns decide (generative rows
    by their layout), else text2text for encoder-decoders and classification for the rest."""
    data_dir: str | None = opt(None, metavar="DIR")
    """A folder with <task>/train.jsonl and validation.jsonl; None: $LADDERTUNE_DATA_DIR, else the hub."""
    protocol: str = opt("dev", choices=PROTOCOLS)
    """dev: validate on the official dev set, no test set; paper: the paper's validation/test splits."""
    train_file: str | None = opt(None, metavar="FILE")
    """Your training data (.jsonl, .csv, .tsv)."""
    validation_file: str | None = opt(None, metavar="FILE")
    """Your validation data; without one, 10% of the training rows are held out."""
    text_column: str | None = opt(None, metavar="NAME")
    """The column of the (first) text; required for custom data, overrides a GLUE task's."""
    text_pair_column: str | None = opt(None, metavar="NAME")
    """The column of the second text, if any."""
    label_column: str | None = opt(None, metavar="NAME")
    """The column of the label (default: label)."""
    problem_type: str | None = opt(None, choices=PROBLEM_TYPES)
    """Custom data: regression or single_label_classification; None: inferred from the labels (and logged)."""
    max_length: int = opt(128, minimum=8, metavar="N")
    """The longest input in tokens (the paper's 128); batches are padded to their longest example."""
    max_train_samples: int | None = opt(None, minimum=1, metavar="N")
    """Train on a seeded subsample of N examples; None: all."""
    max_eval_samples: int | None = opt(None, minimum=1, metavar="N", aliases=("eval_max_samples",))
    """Evaluate on a seeded subsample of N validation (and test) examples; None: all. Also spelled
    eval_max_samples (--eval-max-samples)."""
    tap_cache: str | None = opt(None, metavar="DIR")
    """A folder for the tap cache (methods whose side network reads the backbone's taps): the training examples'
    taps are written there once and read in every later epoch and run instead of running the backbone."""
    tap_dtype: str = opt("float32", choices=TAP_DTYPES)
    """The cached taps' dtype; float32 trains exactly as without a cache, the others take half the disk."""

    chat_template: str | None = opt(None, metavar="FILE")
    """Generative rows: a Jinja chat template file for a backbone without its own (a checkpoint keeps its text)."""
    prompt_format: str = opt("auto", choices=PROMPT_FORMATS)
    """Prompt/completion and alpaca rows: chat (a one-turn conversation in the chat template), plain (prompt, a
    newline, completion) or auto (chat when a template is at hand)."""
    train_on_prompt: bool = False
    """Generative rows: learn every token, not only the answers (assistant turns, completions)."""
    packing: bool = False
    """Generative rows: pack several short training rows into each sequence of max_length tokens, each row
    attending only to itself with its own positions (the backbone and the side network alike)."""
    features: str | None = opt(None, metavar="FILE")
    """Vision-and-language tasks: the image features, an HDF5 file keyed by image id (laddertune features writes
    one; VL-T5 / VL-Adapter's feature files load as they are)."""
    annotations: dict[str, str] | None = opt(None, metavar="FILE")
    """Vision-and-language tasks: the training annotations (VL-Adapter's annotation JSON, Karpathy's
    dataset_coco.json or plain JSONL); vl-multitask names each task's file: vqa=FILE,gqa=FILE,nlvr2=FILE,..."""
    validation_annotations: dict[str, str] | None = opt(None, metavar="FILE")
    """Vision-and-language tasks: the validation annotations, given as annotations are (captions read the val split
    of Karpathy's file); a task without them holds out 10% of its training examples."""
    task_batch_sizes: dict[str, int] | None = opt(None, metavar="TASK=N,...")
    """Vision-and-language tasks: each task's training batch, over batch_size; without batch_size the paper's
    (vqa 300, gqa 500, nlvr2 100, caption 250)."""

    def __post_init__(self) -> None:
        if self.task is None and self.train_file is not None:
            self.task = "custom"
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError("task must be a GLUE task name, or custom with a train_file")
        check_fields(self)
        check_vl_data(self)  # the options of a vision-and-language task (or their absence on a text task)
        custom = self.task.lower() == "custom"
        if self.problem_type is not None and not custom:
            raise ConfigError(
                "problem_type applies to custom data (--task custom); a GLUE task fixes its own"
            )
        if custom and not self.train_file:
            raise ConfigError("task 'custom' needs train_file (--train-file)")
        if self.format in LAYOUTS and not custom:
            raise ConfigError(f"format {self.format} reads generative rows from a train_file (task custom)")
        if self.format in LABEL_FORMATS and custom and not self.text_column:
            raise ConfigError(
                f"format {self.format} reads a labelled file: give its text_column (--text-column)"
            )

    def load_kwargs(self) -> dict:
        """Keyword arguments of :func:`laddertune.data.load_splits`. The split seed is always 42, the paper's
        data-split seed: every training seed sees the same splits."""
        names = ("data_dir", "protocol", "train_file", "validation_file", "text_column", "text_pair_column",
                 "label_column", "max_train_samples", "max_eval_samples", "problem_type")  # fmt: skip
        return {"seed": 42, **{name: getattr(self, name) for name in names}}


@dataclass
class ModelConfig:
    """The backbone."""

    backbone: str = opt("minilm", metavar="NAME")
    """An alias (minilm, smollm2), a local folder or a hub id."""
    trust_remote_code: bool = False
    """Let transformers run Python code shipped with the backbone (its hub repository's modeling files); off, only
    the model classes of the installed transformers load."""
    allow_pickle: bool = False
    """Load a backbone whose weights are only pickle files (.bin, .pt), with torch's weights_only loader; off, such
    a folder is refused (a pickle can run code)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.backbone:
            raise ConfigError("backbone must be an alias, a folder or a hub id, got ''")


@dataclass
class OptimizationConfig:
    """How the trainable parameters learn."""

    epochs: int | None = opt(None, minimum=1, cli_default=3, parse=_epochs, metavar="N")
    """Training epochs, or paper for the task's own count (20 for RTE, MRPC, CoLA, STS-B; 10 for the others); the
    command line's 3 finishes RTE in minutes on a CPU, the library's None is the task's count."""
    batch_size: int = opt(32, minimum=1, metavar="N")
    """The training batch (the paper's 100 is slow on a CPU); with gradient_accumulation_steps, the micro-batch."""
    gradient_accumulation_steps: int = opt(1, minimum=1, metavar="K")
    """Micro-batches of batch_size per optimizer step: each step equals one on a batch of K * batch_size (the mean
    loss over all its examples, or target tokens for LM heads). Steps, the schedule, save_steps, log_every and
    eval_steps count optimizer steps."""
    max_steps: int | None = opt(None, minimum=1, metavar="N")
    """Stop after N optimizer steps, overriding epochs: the schedule spans N steps and the run takes as many epochs
    as they need (the last may stop part-way, and validates there)."""
    eval_batch_size: int = opt(64, minimum=1, metavar="N")
    """The evaluation batch (no gradients, so it can be larger)."""
    lr: float | None = opt(None, positive=True)
    """The peak learning rate; None: the paper's for the method (3e-3 LST, 0.3 prompt tuning, 3e-4 others)."""
    warmup_steps: int | None = opt(None, minimum=0, metavar="N")
    """Linear warm-up steps; None: warmup_ratio's, else min(500, 10% of all steps) (the paper's 500 would swallow
    a short run)."""
    warmup_ratio: float | None = opt(None, fraction=True, metavar="F")
    """Linear warm-up over this fraction of all steps, rounded up (transformers' warmup_ratio); not with
    warmup_steps."""
    max_grad_norm: float = opt(1.0, minimum=0)
    """Clip the gradient norm to this (0 disables clipping)."""
    weight_decay: float = opt(0.0, minimum=0)
    """AdamW's weight decay (0 in the paper)."""
    optimizer: str = opt("adamw", choices=OPTIMIZERS)
    """adamw (float32 moments: 8 bytes of state per trainable parameter) or adamw8bit (bitsandbytes' 8-bit
    moments, about 2 bytes; an optional dependency)."""
    seed: int = opt(0, minimum=0)
    """The seed of the initialisation, dropout and the data order (the paper ran seeds 0, 1, 2)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ConfigError("warmup_steps and warmup_ratio exclude each other: give one")


@dataclass
class RunConfig:
    """What the run writes, and when."""

    output_dir: str | None = opt(None, metavar="DIR")
    """Where the run writes; None: runs/<task>-<method>-<YYYYmmdd-HHMMSS>."""
    memory_steps: int = opt(3, minimum=0, metavar="N")
    """Training steps measured for peak memory, after one warm-up step (0: off)."""
    save_steps: int | None = opt(None, minimum=1, metavar="N")
    """Also write checkpoint-last every N steps (it is always written at the end of each epoch)."""
    log_every: int = opt(10, minimum=1, metavar="N")
    """Append the mean training loss to metrics.jsonl every N steps."""
    eval_steps: int | None = opt(None, minimum=1, metavar="N")
    """Also validate every N optimizer steps (each epoch's end still validates); the best checkpoint is the best of
    all validations."""
    overwrite: bool = False
    """Replace a finished or unfinished run in output_dir."""
    resume: bool = False
    """Continue the unfinished run in output_dir from its checkpoint-last."""
    force: bool = False
    """With resume: continue even when the settings or the data differ from the run's (refused otherwise)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.overwrite and self.resume:
            raise ConfigError("overwrite and resume exclude each other: start over, or continue")
        if self.force and not self.resume:
            raise ConfigError("force applies to resume: it continues a run whose settings or data differ")


@dataclass
class DeviceConfig:
    """Where and in what precision the run computes."""

    device: str = "auto"
    """auto (the first GPU when CUDA is available, else the CPU), cpu, cuda or cuda:N."""
    precision: str = opt("fp32", choices=PRECISIONS)
    """The forward's precision: fp32, or autocast in bf16 / fp16 (fp16 with a gradient scaler); the trainable
    weights and optimizer state stay float32 either way."""
    device_map: str | None = opt(None, choices=("auto",))
    """auto: spread the frozen backbone over the visible devices with accelerate (its big-model placement) and
    keep the side network on one of them (methods with a side network); None: everything on one device."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_device_name(self.device)


@dataclass
class GenerationSettings:
    """How the model generates: in evaluation, and, recorded in the checkpoint, in prediction (transformers' names)."""

    eval_generate: bool = False
    """Evaluation also generates an answer for each validation prompt and scores it: exact match, token F1,
    ROUGE-L (the validation loss and perplexity are always given)."""
    max_new_tokens: int = opt(32, minimum=1, metavar="N")
    """Generative rows: the longest generated answer, in tokens."""
    num_beams: int = opt(1, minimum=1, metavar="N")
    """Beam search with N beams (1: greedy or sampling)."""
    do_sample: bool = False
    """Sample the next token instead of taking the most likely one."""
    temperature: float = opt(1.0, positive=True)
    """Sampling: the softmax temperature."""
    top_p: float = opt(1.0, positive=True)
    """Sampling: nucleus sampling's probability mass (1: off)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.top_p > 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    def kwargs(self) -> dict:
        """``generate()``'s keyword arguments."""
        kw = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample}
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "optimization": OptimizationConfig,
    "run": RunConfig,
    "devices": DeviceConfig,
    "generation": GenerationSettings,
}


@dataclass
class TrainConfig:
    """One training run: its data, backbone, method (with the method's own options), optimisation, output and
    devices. Build one from sections, or from option names with :meth:`from_flat`::

        TrainConfig.from_flat(task="rte", method="lora", lora_rank=8, epochs=1)
    """

    data: DataConfig
    """The task and its data."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The backbone."""
    method: object = field(default_factory=LadderConfig)
    """The method's options: a :class:`LadderConfig` (``lst``, ``side-tuning``, ``pruned``) or a baseline's options
    class; its ``name`` is the method."""
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    """How the trainable parameters learn."""
    run: RunConfig = field(default_factory=RunConfig)
    """What the run writes."""
    devices: DeviceConfig = field(default_factory=DeviceConfig)
    """Where it computes."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """How it generates (evaluation, and prediction from its checkpoints)."""

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}"
                )
        name = getattr(self.method, "name", None)
        spec = method_spec(name) if isinstance(name, str) else None
        if spec is None or not isinstance(self.method, spec.options):
            raise ConfigError(f"method must be the options of a method ({', '.join(method_names())})")
        for option, value in TRAINING_DEFAULTS.items():
            if hasattr(self.method, option) and getattr(self.method, option) is None:
                setattr(self.method, option, value)
        if self.data.tap_cache is not None:
            if not spec.reads_taps:
                raise ConfigError(f"tap_cache: method {name!r} reads no backbone taps to cache")
            if getattr(self.method, "backbone_dropout", False):
                raise ConfigError(
                    "tap_cache needs backbone dropout off: with dropout the backbone's taps differ in every epoch"
                )
            if getattr(self.method, "reentry_layers", 0):
                raise ConfigError(
                    "tap_cache and reentry_layers: re-entry runs the backbone's top layers on every step"
                )
        if is_vl_run_task(self.data.task):
            check_vl_run(self)
        if self.devices.device_map is not None and not spec.side_network:
            raise ConfigError(
                f"device_map places a frozen backbone next to a side network; method {name!r} trains its backbone"
            )

    # -- the method --------------------------------------------------------------------------------------------
    @property
    def method_name(self) -> str:
        return self.method.name

    @property
    def spec(self) -> MethodSpec:
        """The method's registry entry (what it is and can do)."""
        return method_spec(self.method.name)

    # -- defaults that depend on the run -------------------------------------------------------------------------
    def resolved_lr(self, model_type: str | None = None) -> float:
        """The learning rate: the given one, else the paper's for the method (and, where the paper gave per-task
        rates for the backbone's ``model_type``, e.g. LST on BART-large's encoder, that task's)."""
        if self.optimization.lr is not None:
            return self.optimization.lr
        by_task = self.spec.task_lr.get(model_type or "", {})
        return by_task.get(self.data.task.lower(), self.spec.default_lr)

    def resolved_epochs(self, task_epochs: int) -> int:
        """The number of epochs: the given one, else the task's (``TaskSpec.epochs``)."""
        epochs = self.optimization.epochs
        return epochs if epochs is not None else task_epochs

    def resolved_steps(
        self, train_size: int, task_epochs: int, batches: int | None = None
    ) -> tuple[int, int, int]:
        """(epochs, optimizer steps per epoch, total steps) for ``train_size`` examples: an epoch is the batches
        of batch_size (or ``batches`` of the run's own sizes: a vision-and-language run's per-task batches) grouped
        by gradient_accumulation_steps (the last group may be smaller); with max_steps the total is max_steps and
        the epochs as many as it needs, else the epochs are :meth:`resolved_epochs`'s."""
        optim = self.optimization
        if batches is None:
            batches = math.ceil(train_size / optim.batch_size)
        per_epoch = math.ceil(batches / optim.gradient_accumulation_steps)
        if optim.max_steps is not None:
            return math.ceil(optim.max_steps / per_epoch), per_epoch, optim.max_steps
        epochs = self.resolved_epochs(task_epochs)
        return epochs, per_epoch, epochs * per_epoch

    def resolved_warmup(self, total_steps: int) -> int:
        """Warm-up steps: the given number, else the given ratio of ``total_steps`` (rounded up), else min(500,
        10% of ``total_steps``)."""
        optim = self.optimization
        if optim.warmup_steps is not None:
            return optim.warmup_steps
        if optim.warmup_ratio is not None:
            return math.ceil(optim.warmup_ratio * total_steps)
        return min(PAPER_WARMUP, math.floor(0.1 * total_steps))

    def default_output_dir(self) -> str:
        """``runs/<task>-<method>-<YYYYmmdd-HHMMSS>``."""
        from datetime import datetime

        return str(Path("runs") / f"{self.data.task}-{self.method_name}-{datetime.now():%Y%m%d-%H%M%S}")

    # -- the flat form: train_config.json, results.json, --config files ----------------------------------------
    def to_dict(self) -> dict:
        """The flat mapping of option names to values (sections in order, the method's options after ``method``)."""
        flat = {}
        for name in ("data", "model"):
            flat.update(_section_dict(getattr(self, name)))
        flat["method"] = self.method_name
        flat.update(_section_dict(self.method))
        for name in ("optimization", "run", "devices", "generation"):
            flat.update(_section_dict(getattr(self, name)))
        return flat

    @classmethod
    def from_flat(cls, mapping: dict | None = None, /, **options) -> TrainConfig:
        """A config from option names (the flags' names with underscores): ``from_flat(task="rte", lr=1e-3)``.

        Raises:
            ConfigError: an unknown option, an option of another method than ``method``, or a bad value.
        """
        flat = vl_run_settings({**(mapping or {}), **options})  # a VL task: the paper's CLIP-T5 defaults
        method = flat.pop("method", "lst")
        spec = method_spec(method)
        sections: dict[str, dict] = {name: {} for name in SECTIONS}
        method_values = {}
        own = spec.option_names()
        for key, value in flat.items():
            if key in own:
                method_values[key] = value
            elif key in _SECTION_OF:
                section, attr = _SECTION_OF[key]
                sections[section][attr] = value
            elif key in _METHOD_OPTIONS:
                owners = ", ".join(_METHOD_OPTIONS[key])
                raise ConfigError(f"{key} is an option of method {owners}, not of method {method}")
            else:
                raise ConfigError(f"unknown option {key!r}")
        if "task" not in sections["data"] and "train_file" not in sections["data"]:
            raise ConfigError("a train config needs a task (or a train_file)")
        return cls(
            data=DataConfig(**sections["data"]),
            model=ModelConfig(**sections["model"]),
            method=spec.make_options(method_values),
            optimization=OptimizationConfig(**sections["optimization"]),
            run=RunConfig(**sections["run"]),
            devices=DeviceConfig(**sections["devices"]),
            generation=GenerationSettings(**sections["generation"]),
        )

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; also takes sections written nested, and files of laddertune 0.1 (which
        listed every method's options: another method's option at its default is dropped, any other value is an
        error). Unknown options raise :class:`ConfigError`."""
        flat = flatten_sections(data)
        method = flat.get("method", "lst")
        if not isinstance(method, str):
            raise ConfigError(f"method must be a method's name, got {method!r}")
        own = {option_name(f) for f in options_of(method_spec(method).options)}
        for key in [k for k in flat if k in _METHOD_OPTIONS and k not in own]:
            if flat[key] in _DEFAULTS_OF[key]:
                del flat[key]
        if method in LADDER_METHODS and "tap_projection" not in flat:
            # written before the tap projection existed: full-width taps, and None meant other things then
            flat["tap_projection"] = "none"
            flat.update({k: v for k, v in LEGACY_NONE.items() if flat.get(k) is None})
        flat = {**LEGACY_DEFAULTS.get(method, {}), **flat}
        return cls.from_flat(flat)

    def to_run_dict(self, directory: str | Path) -> dict:
        """:meth:`to_dict` as a run folder records it: local paths relative to ``directory`` (see run_paths)."""
        return relative_paths(self.to_dict(), PATHS, directory)

    def save(self, directory: str | Path) -> Path:
        """Write ``train_config.json`` into ``directory`` atomically (paths relative to it); returns its path."""
        return save_json(Path(directory) / CONFIG_NAME, self.to_run_dict(directory))

    @classmethod
    def load(cls, directory: str | Path) -> TrainConfig:
        """Read ``train_config.json`` from ``directory``, its relative paths resolved against where it is now."""
        return cls.from_dict(resolved_paths(load_json(Path(directory) / CONFIG_NAME), PATHS, directory))

    def differences(self, other: TrainConfig) -> list[str]:
        """Options (other than how-to-run ones such as ``output_dir``) whose values differ from ``other``'s."""
        a, b = self.to_dict(), other.to_dict()
        # a recorded backbone folder that is no longer there (the run was moved) is checked by the side
        # checkpoint's fingerprint when the weights load, not by its path
        moved = self.spec.side_network and moved_folder(b["backbone"])
        return [
            k
            for k in sorted(set(a) | set(b))
            if k not in RESUME_FREE and not same_path(a.get(k), b.get(k)) and not (k == "backbone" and moved)
        ]


def flatten_sections(data) -> dict:
    """A configuration mapping with its sections (``{"optimization": {"lr": ...}}``, ``{"method": {"name": "lora",
    "lora_rank": 8}}``) flattened into option names; a flat mapping is returned as it is (copied)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a train config must be a mapping of option names, got {type(data).__name__}")
    flat = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        elif key == "method" and isinstance(value, dict):
            value = dict(value)
            if "name" not in value:
                raise ConfigError("a nested method section needs its name (method: {name: lora, ...})")
            flat["method"] = value.pop("name")
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _section_dict(section) -> dict:
    values = {}
    for f in options_of(type(section)):
        value = getattr(section, f.name)
        values[option_name(f)] = list(value) if isinstance(value, tuple) else value
    return values


def _option_tables():
    """Where each option lives: section options -> (section, field); method options -> the methods that have it
    and their defaults."""
    section_of = {
        key: (name, f.name)
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        for key in (option_name(f), *f.metadata.get("aliases", ()))
    }
    owners: dict[str, list[str]] = {}
    defaults: dict[str, list] = {}
    for name in method_names():
        for f in options_of(method_spec(name).options):
            key = option_name(f)
            owners.setdefault(key, []).append(name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            defaults.setdefault(key, []).extend(
                [default, *([TRAINING_DEFAULTS[key]] if key in TRAINING_DEFAULTS else [])]
            )
    return section_of, owners, defaults


_SECTION_OF, _METHOD_OPTIONS, _DEFAULTS_OF = _option_tables()
