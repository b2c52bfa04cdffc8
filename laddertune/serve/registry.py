"""The served side networks: one frozen backbone in memory, and every named side network built around it.

A side network of an LM head (a generative checkpoint) holds the backbone itself; one of a classification head holds
the backbone's base model inside a classifier of its own (:func:`~laddertune.core.task_model.with_task_head` with
its own copy of the config, so tasks with other label counts and names stay apart), so the backbone's weights are
in memory once whatever the mix. A checkpoint trained on another backbone is refused by its fingerprint, in one line
(:func:`~laddertune.core.side_checkpoint.load_side_weights`); the backbone is never converted or stripped for a
checkpoint (its dtype is the server's ``backbone_dtype``, which the fingerprint accepts in any precision).
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import GenerationConfig

from ..core import LadderModel
from ..core.backbones import load_backbone, load_tokenizer
from ..core.quantization import convert_backbone
from ..core.side_checkpoint import (
    GENERATION_CONFIG_NAME,
    load_side_weights,
    read_side_config,
    restore_labels,
    saved_num_labels,
)
from ..core.task_model import with_task_head
from ..data import make_collator
from ..data.generative_task import GenerativeTask
from ..errors import CheckpointError, ConfigError
from ..io import verify_checksums
from ..methods import method_spec
from ..training.build import position_limit
from ..training.config import CONFIG_NAME
from ..training.generative_prediction import generation_settings
from ..training.prediction import read_task, resolve_checkpoint
from ..training.run_paths import require_backbone
from . import kv
from .sampling import unsupported_settings

logger = logging.getLogger(__name__)
# tokens, for a backbone without a position limit (or with a longer one than a CPU should serve)
DEFAULT_CONTEXT = 2048
_keys = itertools.count()


@dataclass
class ServedSide:
    """One named side network and what its requests need: the task, how it renders prompts, how it answers."""

    name: str
    model: LadderModel
    kind: str  # "generation" or "classification"
    path: Path
    task: object  # a GenerativeTask, or a classification TaskSpec
    max_length: int
    settings: object = None  # generation: the checkpoint's GenerationSettings
    eos: frozenset = frozenset()  # generation: the token ids that end an answer
    collate: object = None  # classification: the checkpoint's collator
    key: str = field(default_factory=lambda: f"side-{next(_keys)}")  # unique per load (a name may come back)
    created: int = field(default_factory=lambda: int(time.time()))


def run_name(path: Path) -> str:
    """The name of a checkpoint given without one: its run folder's name (the folder's own, for a bare one)."""
    path = resolve_checkpoint(path)
    inside = (path.parent / CONFIG_NAME).is_file() or path.name.startswith("checkpoint-")
    return path.parent.name if inside else path.name


class ServedModels:
    """The backbone, its tokenizer and the named side networks on it; safe to load and unload while serving.

    Args:
        backbone: the loaded backbone (an LM head for generation; any head for classification only).
        tokenizer: its tokenizer.
        max_context: the longest prompt plus answer a request may ask for, in tokens.
        models_root: the folder runtime loads may read from (None: runtime loading is off).
    """

    def __init__(self, backbone, tokenizer, *, max_context: int, models_root: Path | None = None) -> None:
        self.backbone = backbone.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.models_root = None if models_root is None else Path(models_root).resolve()
        self.device = next(backbone.parameters()).device
        self.can_generate = (
            getattr(backbone, "can_generate", lambda: False)() and not backbone.config.is_encoder_decoder
        )
        self.sides: dict[str, ServedSide] = {}
        self._lock = threading.Lock()
        if self.can_generate:
            from transformers.cache_utils import DynamicCache

            kv.check_layers(DynamicCache(config=backbone.config), f"backbone {backbone.config.model_type}")

    @classmethod
    def open(
        cls,
        checkpoints: dict[str, str | Path],
        *,
        backbone: str | None = None,
        backbone_dtype: str | None = None,
        device: str = "cpu",
        max_context: int | None = None,
        models_root: str | Path | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ) -> ServedModels:
        """Load the backbone the first checkpoint names (or ``backbone``) once, then every checkpoint onto it.

        Args:
            checkpoints: ``{name: checkpoint or run folder}``, in order.
            backbone: load this backbone instead of the recorded one (the fingerprint still decides).
            backbone_dtype: ``float32``, ``bfloat16``, ``float16``, ``int8`` or ``nf4`` (default: the dtype the
                first checkpoint trained in).
            device: where the backbone and the side networks run.
            max_context: the longest prompt plus answer (default: the backbone's position limit, at most
                :data:`DEFAULT_CONTEXT`).

        Raises:
            CheckpointError: a missing or corrupt checkpoint, one of another backbone, or one the server cannot run.
            ConfigError: bad options.
        """
        if not checkpoints:
            raise ConfigError("give at least one --checkpoint to serve")
        paths = {name: resolve_checkpoint(p) for name, p in checkpoints.items()}
        first = next(iter(paths.values()))
        name = backbone or require_backbone(read_task(first)[0]["backbone"], first)
        tasks = {n: read_task(p)[0] for n, p in paths.items()}
        generative = [n for n, t in tasks.items() if "generative" in t]
        if generative:
            head, kwargs = "causal_lm", {}
        else:
            head, kwargs = "sequence_classification", {"num_labels": saved_num_labels(first)}
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
        model = load_backbone(
            name, head, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, **kwargs
        )
        if model.config.pad_token_id is None:  # as training sets it: part of the config the fingerprint reads
            model.config.pad_token_id = tokenizer.pad_token_id
        model.to(torch.device(device))
        dtype = backbone_dtype or read_side_config(first).backbone_dtype
        if dtype is not None:
            convert_backbone(model, dtype)
        limit = position_limit(name, trust_remote_code)
        context = max_context or min(limit or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        if limit is not None and context > limit:
            raise ConfigError(f"--max-context {context} is beyond the backbone's {limit} positions")
        served = cls(model, tokenizer, max_context=context, models_root=models_root)
        for side_name, path in paths.items():
            served.load(side_name, path)
        return served

    # -- the named side networks --------------------------------------------------------------------------------
    def get(self, name: str) -> ServedSide | None:
        return self.sides.get(name)

    def names(self) -> list[str]:
        return list(self.sides)

    def load(self, name: str, path: str | Path) -> ServedSide:
        """Build checkpoint ``path``'s side network around the backbone and serve it as ``name``.

        Raises:
            ConfigError: ``name`` is taken.
            CheckpointError: see :meth:`open`.
        """
        if not name or any(c.isspace() for c in name):
            raise ConfigError(f"a model name must be a non-empty word without spaces, got {name!r}")
        if name in self.sides:
            raise ConfigError(f"a model named {name!r} is already served; unload it first")
        side = self._build(name, resolve_checkpoint(path))
        with self._lock:
            if name in self.sides:
                raise ConfigError(f"a model named {name!r} is already served; unload it first")
            self.sides[name] = side
        logger.info("serving %s (%s) from %s", name, side.kind, side.path)
        return side

    def load_from_root(self, name: str, path: str) -> ServedSide:
        """:meth:`load` of a checkpoint under ``models_root`` (relative to it, or absolute inside it); nothing
        outside the root is read, through links either.

        Raises:
            PermissionError: runtime loading is off, or the path (or a file in it) leads outside the root.
        """
        if self.models_root is None:
            raise PermissionError("runtime loading is off: start the server with --models-root DIR")
        target = (self.models_root / path).resolve()
        if not target.is_relative_to(self.models_root):
            raise PermissionError(f"{path} is outside the models root")
        if not target.is_dir():
            raise CheckpointError(f"no checkpoint folder at {path} under the models root")
        best = target / "checkpoint-best"
        folder = best.resolve() if (target / CONFIG_NAME).is_file() and best.is_dir() else target
        # a link inside may point anywhere: every file read must stay in the root
        for item in [folder, *folder.iterdir()]:
            if not item.resolve().is_relative_to(self.models_root):
                raise PermissionError(f"{path} links outside the models root ({item.name})")
        return self.load(name, folder)

    def unload(self, name: str) -> ServedSide:
        """Stop serving ``name`` (requests already running finish: they hold the side network). KeyError if absent."""
        with self._lock:
            return self.sides.pop(name)

    # -- building one side network --------------------------------------------------------------------------------
    def _build(self, name: str, path: Path) -> ServedSide:
        verify_checksums(path)
        task, spec = read_task(path)
        method = task.get("method", "lst")
        if not method_spec(method).side_network:
            raise CheckpointError(
                f"{path} is a {method} checkpoint: the server runs side networks (lst, side-tuning, pruned) on its "
                "one backbone; serve a baseline with laddertune predict"
            )
        config = read_side_config(path)
        # the batched decode step (serve/batching.py) runs the backbone once for every side network
        if config.reentry_layers:
            raise CheckpointError(
                f"{path} re-runs the backbone's top layers (reentry_layers={config.reentry_layers}), which the "
                "server's shared backbone pass does not do: use laddertune generate or predict"
            )
        max_length = int(task.get("max_length", 128))
        if isinstance(spec, GenerativeTask):
            if task["head"] != "causal_lm":
                raise CheckpointError(
                    f"{path}: the server generates with decoder-only backbones, not {task['head']}"
                )
            if not self.can_generate:
                raise CheckpointError(
                    f"{path} generates text, and the server's backbone was loaded without its LM head: start the "
                    "server with a generative checkpoint first"
                )
            host = self.backbone
        else:
            host = self._classifier(path)
        model = LadderModel(host, config)  # the side network only: the backbone is held, never copied
        load_side_weights(model, path, config)  # refuses another backbone, in one line
        model.side.to(self.device)
        model.eval()
        if isinstance(spec, GenerativeTask):
            if (path / GENERATION_CONFIG_NAME).is_file():
                model.generation_config = GenerationConfig.from_pretrained(path)
            extra = unsupported_settings(model.generation_config)
            if extra:
                logger.warning(
                    "%s: generation_config sets %s, which the server does not apply", name, ", ".join(extra)
                )
            eos = model.generation_config.eos_token_id
            eos = {eos} if isinstance(eos, int) else set(eos or ())
            if self.tokenizer.eos_token_id is not None:
                eos.add(self.tokenizer.eos_token_id)
            settings = generation_settings(task, {})
            return ServedSide(name, model, "generation", path, spec, max_length, settings, frozenset(eos))
        restore_labels(host, config)
        collate = make_collator(self.tokenizer, fmt="classification", spec=spec, max_length=max_length)
        return ServedSide(name, model, "classification", path, spec, max_length, collate=collate)

    def _classifier(self, path: Path):
        """A classifier of its own around the backbone's base model (its new head sized for ``path``)."""
        config = copy.deepcopy(self.backbone.config)
        config.num_labels = saved_num_labels(path) or 2
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id
        try:
            return with_task_head(self.backbone.base_model, "sequence_classification", config=config)
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from None
