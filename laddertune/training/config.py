"""`TrainConfig`: everything one training run needs, validated at construction, saved as train_config.json.

Defaults that depend on the run are left as ``None`` here and resolved by :meth:`TrainConfig.resolved_lr`,
:meth:`TrainConfig.resolved_epochs` and :meth:`TrainConfig.resolved_warmup`, so that ``train_config.json`` records
what the user asked for and ``results.json`` what actually ran.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.config import ATTN_IMPLEMENTATIONS, BACKBONE_DTYPES, LADDER_METHODS
from ..errors import ConfigError
from ..io import load_json, save_json
from .config_checks import check_choice, check_int, check_number, parse_int_list
from .device import check_device_name
from .optimizer import OPTIMIZERS
from .precision import PRECISIONS
from .run_paths import moved_folder, relative_paths, resolved_paths, same_path

CONFIG_NAME = "train_config.json"
# LST and its Figure 8 ablations train a side network (LadderModel); the rest are baselines (laddertune.baselines).
METHODS = (*LADDER_METHODS, "full", "lora", "adapter", "bitfit", "prompt", "qlora")
INITS = ("random", "magnitude", "fisher")
CHAINS = ("residual", "authors")
PROTOCOLS = ("dev", "paper")
FORMATS = ("classification", "text2text", "causal")
PROBLEM_TYPES = ("regression", "single_label_classification")
# Learning rates of the paper (lst-reference.md §4): LST 3e-3, prompt tuning 0.3, every other method 3e-4.
DEFAULT_LR = {"lst": 3e-3, "side-tuning": 3e-3, "pruned": 3e-3, "prompt": 0.3}
OTHER_LR = 3e-4
# LST on BART-large's encoder (Table 2, lst-reference.md §6): the paper's per-task learning rates.
BART_LST_LR = {"cola": 1e-3, "mrpc": 3e-3, "qnli": 1e-3, "rte": 3e-3, "sst2": 3e-3, "mnli": 3e-4, "qqp": 3e-4}
BART_TYPES = ("bart", "mbart")
PAPER_WARMUP = 500
PATHS = ("data_dir", "train_file", "validation_file", "output_dir", "tap_cache")
TAP_DTYPES = ("float32", "bfloat16", "float16")
COLUMNS = ("text_column", "text_pair_column", "label_column")
# Fields that may differ between a run and its resumption: they say how to run, not what to train.
RESUME_FREE = (
    "overwrite",
    "resume",
    "output_dir",
    "data_dir",
    "save_steps",
    "log_every",
    "device",
    "tap_cache",
)


@dataclass
class TrainConfig:
    """One training run (task, backbone, method, optimisation, data, output).

    Attributes are documented one by one below; ``None`` means "the documented default for this run".
    """

    task: str
    """A GLUE task (``rte``, ``mrpc``, ...) or ``custom`` (then ``train_file`` and ``text_column`` are needed)."""
    backbone: str = "minilm"
    """Backbone alias (``minilm``, ``smollm2``), local folder or hub id."""
    method: str = "lst"
    """``lst``, its ablations (paper Figure 8) ``side-tuning`` (no ladders; one late shortcut) and ``pruned`` (the
    pruned side network alone, no backbone at run time; needs ``init`` magnitude or fisher), or a baseline:
    ``full``, ``lora``, ``adapter``, ``bitfit``, ``prompt``."""
    reduction_factor: int = 8
    """LST: the side network is 1/r as wide as the backbone."""
    side_layers: list[int] | None = None
    """LST: backbone layer ids (0-based) that get a side layer; None keeps all."""
    init: str = "random"
    """LST: side weights start ``random`` or pruned from the backbone (``magnitude``, ``fisher``)."""
    pruning_chain: str = "residual"
    """LST with a pruned init: ``residual`` (one set of hidden dims for the residual stream) or ``authors``."""
    fisher_samples: int = 1024
    """LST with ``init="fisher"``: training examples for the empirical Fisher information (the paper's 1024)."""
    final_shortcut: bool | None = None
    """LST, classification: the head reads the backbone's final hidden state plus the up-projected side output
    (zero at the start, so step 0 is the backbone's own head); False: the side output alone, the authors' head.
    None: the default for the head (on for classification; docs/first_steps.md has the evidence)."""
    backbone_dropout: bool = False
    """LST: run the frozen backbone with dropout on while training (the authors' setting; slower, noisier)."""
    device_map: str | None = None
    """LST: ``"auto"`` places the frozen backbone over the visible devices with accelerate (its big-model
    placement) and the side network on one of them; None keeps everything on one device."""
    freeze_layers: int = 0
    """Baselines: freeze the first N layers (the paper's Figure 6). LST drops side layers with ``side_layers``."""
    lora_rank: int = 32
    """LoRA: the rank of the update (the authors' 32; Figure 5 sweeps it)."""
    adapter_reduction: int = 16
    """Adapters: the bottleneck is hidden_size // adapter_reduction (the authors' 16; Figure 5 sweeps it)."""
    epochs: int | None = None
    """Training epochs; None: the paper's count for the task (20 for RTE/MRPC/CoLA/STS-B, 10 for the rest)."""
    batch_size: int = 32
    """Training batch size (the paper used 100 on a GPU; 32 keeps a CPU step short)."""
    eval_batch_size: int = 64
    """Evaluation batch size (no gradients, so it can be larger)."""
    lr: float | None = None
    """Peak learning rate; None: 3e-3 for LST, 0.3 for prompt tuning, 3e-4 otherwise (the paper's)."""
    warmup_steps: int | None = None
    """Linear warm-up steps; None: min(500, 10% of all steps). The paper's 500 would be most of a short CPU run."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this (0 disables clipping)."""
    weight_decay: float = 0.0
    """AdamW weight decay (0 in the paper)."""
    seed: int = 0
    """Seed of the model's initialisation, dropout and the data order (the paper ran seeds 0, 1, 2)."""
    max_train_samples: int | None = None
    """Train on this many examples (a seeded subsample); None: all."""
    max_eval_samples: int | None = None
    """Evaluate on this many validation (and test) examples; None: all."""
    max_length: int = 128
    """Longest input in tokens (the paper's 128); batches are padded to their longest example."""
    data_dir: str | None = None
    """Folder with ``<task>/train.jsonl`` and ``validation.jsonl``; None: env LADDERTUNE_DATA_DIR, else the hub."""
    protocol: str = "dev"
    """``dev`` (validate on the official dev set, no test) or ``paper`` (dev halved into validation and test...)."""
    train_file: str | None = None
    """The user's training file (.jsonl, .csv, .tsv)."""
    validation_file: str | None = None
    """The user's validation file; without one, 10% of train is held out."""
    text_column: str | None = None
    """Column of the (first) text; required for ``custom``, overrides a GLUE task's."""
    text_pair_column: str | None = None
    """Column of the second text, if any."""
    label_column: str | None = None
    """Column of the label (default ``label``)."""
    problem_type: str | None = None
    """Custom data: ``regression`` or ``single_label_classification``; None: inferred from the labels (logged)."""
    output_dir: str | None = None
    """Where the run writes; None: ``runs/<task>-<method>-<YYYYmmdd-HHMMSS>``."""
    format: str | None = None
    """``classification``, ``text2text`` or ``causal``; None: text2text for encoder-decoders (T5), else
    classification (a sequence-classification head, also for decoder-only backbones)."""
    memory_steps: int = 3
    """Training steps measured by the peak-memory meter, after one warm-up step (0 disables measuring)."""
    save_steps: int | None = None
    """Also write ``checkpoint-last`` every N steps (it is always written at the end of each epoch)."""
    log_every: int = 10
    """Append a training record to metrics.jsonl every N steps."""
    overwrite: bool = False
    """Replace a finished or unfinished run in ``output_dir``."""
    resume: bool = False
    """Continue the unfinished run in ``output_dir`` from its ``checkpoint-last``."""
    trust_remote_code: bool = False
    """Let transformers run Python code shipped with the backbone (its hub repository's modeling files)."""
    device: str = "auto"
    """``auto`` (the first GPU when CUDA is available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: str = "fp32"
    """The forward's precision: ``fp32``, or autocast in ``bf16`` / ``fp16`` (fp16 with a gradient scaler); the
    trainable weights and optimizer state stay float32 either way."""
    backbone_dtype: str = "float32"
    """LST: the frozen backbone's dtype: ``float32``, ``bfloat16``, ``float16``, or quantized ``int8`` / ``nf4``
    (bitsandbytes on CUDA, torchao on CPU). The baselines train their backbone and keep it float32."""
    attn: str = "sdpa"
    """LST: the side network's attention kernel, ``sdpa`` or ``eager``."""
    loss_chunk_size: int | None = None
    """LST with an LM head (text2text, causal): compute the training loss this many positions at a time, so the
    full float32 logits and their gradient never exist at once; None: the plain loss."""
    side_checkpointing: bool = False
    """LST: activation checkpointing of the side layers (recompute them in the backward; same gradients, less
    activation memory, about one more side forward per step)."""
    side_attention_dropout: float | None = None
    """LST: the side network's attention-probability dropout; None keeps the backbone config's."""
    side_attention_heads: int | None = None
    """LST: the side network's number of attention heads; None keeps the backbone's (head size d_head / r)."""
    optimizer: str = "adamw"
    """``adamw`` (torch, float32 moments: 8 bytes of state per trainable parameter) or ``adamw8bit``
    (bitsandbytes, 8-bit moments: about 2 bytes per parameter; optional dependency)."""
    tap_cache: str | None = None
    """LST: a folder for the tap cache; the training examples' backbone taps are written there once and read in
    every epoch and later run instead of running the backbone (needs backbone dropout off)."""
    tap_dtype: str = "float32"
    """LST with ``tap_cache``: the cached taps' dtype; ``float32`` trains exactly as without a cache."""

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError("task must be a GLUE task name or 'custom'")
        for name in ("backbone", *PATHS):  # a Path is kept as its string: train_config.json holds strings
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"backbone must be an alias, a folder or a hub id, got {self.backbone!r}")
        for name in (*PATHS, *COLUMNS):
            if not isinstance(getattr(self, name), str | None):
                raise ConfigError(f"{name} must be a string or None, got {getattr(self, name)!r}")
        check_choice("method", self.method, METHODS)
        check_choice("init", self.init, INITS)
        check_choice("pruning_chain", self.pruning_chain, CHAINS)
        check_int("fisher_samples", self.fisher_samples, 1)
        check_choice("protocol", self.protocol, PROTOCOLS)
        check_device_name(self.device)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("backbone_dtype", self.backbone_dtype, BACKBONE_DTYPES)
        check_choice("attn", self.attn, ATTN_IMPLEMENTATIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.method not in (*LADDER_METHODS, "qlora") and self.backbone_dtype != "float32":
            raise ConfigError(
                f"backbone_dtype applies to LST (a frozen backbone); method {self.method!r} trains its backbone"
            )
        check_choice("tap_dtype", self.tap_dtype, TAP_DTYPES)
        if self.tap_cache is not None and self.method == "pruned":
            raise ConfigError(
                "tap_cache: the pruned side network runs no backbone, there are no taps to cache"
            )
        if self.tap_cache is not None and self.method not in LADDER_METHODS:
            raise ConfigError(f"tap_cache applies to LST only, not to method {self.method!r}")
        if self.tap_cache is not None and self.backbone_dropout:
            raise ConfigError(
                "tap_cache needs backbone dropout off: with dropout the backbone's taps differ in every epoch"
            )
        if self.format is not None:
            check_choice("format", self.format, FORMATS)
        if self.problem_type is not None:
            check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
            if self.task != "custom":
                raise ConfigError(
                    "problem_type applies to custom data (--task custom); a GLUE task fixes its own"
                )
        check_int("reduction_factor", self.reduction_factor, 1)
        check_int("freeze_layers", self.freeze_layers, 0)
        check_int("lora_rank", self.lora_rank, 1)
        check_int("adapter_reduction", self.adapter_reduction, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        check_int("max_length", self.max_length, 8)
        check_int("memory_steps", self.memory_steps, 0)
        check_int("log_every", self.log_every, 1)
        check_int("seed", self.seed, 0)
        for name in ("epochs", "max_train_samples", "max_eval_samples", "save_steps", "loss_chunk_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if self.warmup_steps is not None:
            check_int("warmup_steps", self.warmup_steps, 0)
        if self.side_layers is not None:
            if isinstance(self.side_layers, str):
                self.side_layers = parse_int_list(self.side_layers, "side_layers")
            if isinstance(self.side_layers, bytes | dict) or not isinstance(self.side_layers, Iterable):
                raise ConfigError(
                    f"side_layers must be a list of layer ids or None, got {self.side_layers!r}"
                )
            layers = list(self.side_layers)
            if not layers or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
                raise ConfigError(f"side_layers must be non-negative integers, got {self.side_layers!r}")
            self.side_layers = layers
        if self.lr is not None:
            check_number("lr", self.lr, positive=True)
        check_number("max_grad_norm", self.max_grad_norm)
        check_number("weight_decay", self.weight_decay)
        if self.final_shortcut is not None and not isinstance(self.final_shortcut, bool):
            raise ConfigError(f"final_shortcut must be true, false or None, got {self.final_shortcut!r}")
        for name in ("backbone_dropout", "side_checkpointing", "overwrite", "resume", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.overwrite and self.resume:
            raise ConfigError("overwrite and resume exclude each other: start over, or continue")
        if self.method in LADDER_METHODS and self.freeze_layers:
            raise ConfigError(
                "freeze_layers applies to the baselines; for LST drop side layers with side_layers"
            )
        for name, method, default in (("lora_rank", "lora", 32), ("adapter_reduction", "adapter", 16)):
            if self.method != method and getattr(self, name) != default:
                raise ConfigError(f"{name} applies to method {method}, not to method {self.method!r}")
        if self.method != "lst" and self.final_shortcut is not None:
            raise ConfigError(f"final_shortcut is an LST option, not one of method {self.method!r}")
        if self.method == "pruned" and self.init == "random":
            raise ConfigError(
                "method pruned starts from the pruned backbone: pass --init magnitude or --init fisher"
            )
        if self.method not in LADDER_METHODS and (self.side_layers is not None or self.init != "random"):
            raise ConfigError(f"side_layers and init apply to LST only, not to method {self.method!r}")
        if self.method != "lst" and self.side_checkpointing:
            raise ConfigError(f"side_checkpointing applies to LST only, not to method {self.method!r}")
        if self.device_map not in (None, "auto"):
            raise ConfigError(f"device_map must be 'auto' or None, got {self.device_map!r}")
        for name in ("side_attention_dropout", "side_attention_heads", "device_map"):
            if self.method not in LADDER_METHODS and getattr(self, name) is not None:
                raise ConfigError(f"{name} applies to LST only, not to method {self.method!r}")
        if self.task.lower() == "custom" and (not self.train_file or not self.text_column):
            raise ConfigError("task 'custom' needs train_file (--train-file) and text_column (--text-column)")

    # -- defaults that depend on the run ---------------------------------------------------------------------
    def resolved_lr(self, model_type: str | None = None) -> float:
        """The learning rate: the given one, else the paper's for the method (and, for LST on a BART backbone,
        ``model_type`` ``bart``/``mbart``, the paper's per-task rate of Table 2 where it gave one)."""
        if self.lr is not None:
            return self.lr
        if self.method == "lst" and model_type in BART_TYPES and self.task.lower() in BART_LST_LR:
            return BART_LST_LR[self.task.lower()]
        return DEFAULT_LR.get(self.method, OTHER_LR)

    def resolved_epochs(self, task_epochs: int) -> int:
        """The number of epochs: the given one, else the task's (``TaskSpec.epochs``)."""
        return self.epochs if self.epochs is not None else task_epochs

    def resolved_warmup(self, total_steps: int) -> int:
        """Warm-up steps: the given number, else min(500, 10% of ``total_steps``)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(PAPER_WARMUP, math.floor(0.1 * total_steps))

    def data_kwargs(self) -> dict:
        """Keyword arguments of :func:`laddertune.data.load_splits` for this run.

        The split seed is always 42, the paper's data-split seed: every training seed sees the same splits.
        """
        names = (
            "data_dir",
            "protocol",
            "train_file",
            "validation_file",
            "text_column",
            "text_pair_column",
            "label_column",
            "max_train_samples",
            "max_eval_samples",
            "problem_type",
        )
        return {"seed": 42, **{name: getattr(self, name) for name in names}}

    def default_output_dir(self) -> str:
        """``runs/<task>-<method>-<YYYYmmdd-HHMMSS>``."""
        from datetime import datetime

        return str(Path("runs") / f"{self.task}-{self.method}-{datetime.now():%Y%m%d-%H%M%S}")

    # -- JSON ------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown fields raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"a train config must be a JSON object, got {type(data).__name__}")
        unknown = sorted(map(str, set(data) - {f.name for f in dataclasses.fields(cls)}))
        if unknown:
            raise ConfigError(f"unknown train config field(s): {', '.join(map(repr, unknown))}")
        if "task" not in data:
            raise ConfigError("a train config needs a task")
        if data.get("method", "lst") == "lst":  # a run saved before the field existed trained without it
            data = {"final_shortcut": False, **data}
        return cls(**data)

    def to_run_dict(self, directory: str | Path) -> dict:
        """:meth:`to_dict` as a run folder records it: local paths relative to ``directory`` (see run_paths)."""
        return relative_paths(self.to_dict(), ("backbone", *PATHS), directory)

    def save(self, directory: str | Path) -> Path:
        """Write ``train_config.json`` into ``directory`` atomically (paths relative to it); returns its path."""
        return save_json(Path(directory) / CONFIG_NAME, self.to_run_dict(directory))

    @classmethod
    def load(cls, directory: str | Path) -> TrainConfig:
        """Read ``train_config.json`` from ``directory``, its relative paths resolved against where it is now."""
        return cls.from_dict(
            resolved_paths(load_json(Path(directory) / CONFIG_NAME), ("backbone", *PATHS), directory)
        )

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields (other than how-to-run fields such as ``output_dir``) whose values differ from ``other``'s."""
        a, b = self.to_dict(), other.to_dict()
        # LST: a recorded backbone folder that is no longer there (the run was moved) is checked by the side
        # checkpoint's fingerprint when the weights load, not by its path
        moved = self.method in LADDER_METHODS and moved_folder(b["backbone"])
        return [
            k
            for k in a
            if k not in RESUME_FREE and not same_path(a[k], b[k]) and not (k == "backbone" and moved)
        ]
