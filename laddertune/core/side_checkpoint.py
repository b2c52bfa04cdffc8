"""Side-only checkpoints: the side network's weights and config, tied to the backbone by a fingerprint.

A checkpoint folder holds ``ladder_model.safetensors`` (the side network's own ``state_dict()``, never a backbone
weight) and ``ladder_config.json`` (with the backbone's name, revision and fingerprint), each written atomically
(:mod:`laddertune.io`). :meth:`LadderModel.from_pretrained` rebuilds the model and checks the fingerprint here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from ..io import atomic_save_tensors, load_tensors
from .backbones import load_backbone
from .config import LadderConfig

WEIGHTS_NAME = "ladder_model.safetensors"
# Values sampled per tensor for the fingerprint: enough to tell checkpoints apart, cheap for billions of weights.
_FINGERPRINT_SAMPLES = 4096


# Runtime switches, not properties of the weights: transformers.Trainer sets ``config.use_cache = False``.
_RUNTIME_KEYS = ("use_cache",)


def backbone_fingerprint(model, legacy: bool = False) -> str:
    """A short hash of the backbone's config and weights (excluding its new task head, which LST never uses).

    Each weight contributes its name, shape, dtype and an evenly strided sample of its values, so a checkpoint is
    tied to the weights it was trained on without reading billions of numbers. Runtime switches (``use_cache``,
    which transformers.Trainer turns off) are left out; ``legacy=True`` gives laddertune 0.1's hash, which
    included them and is still accepted when loading.
    """
    backbone, family = model.backbone, model.family
    head_prefixes = tuple(f"{path}." for path in family.cls_head)
    h = hashlib.sha256()
    cfg = backbone.config.to_dict()
    for key in (
        "_name_or_path",
        "transformers_version",
        "id2label",
        "label2id",
        "num_labels",
        "problem_type",
        "architectures",
        "torch_dtype",
        "dtype",
        "_commit_hash",
        *(() if legacy else _RUNTIME_KEYS),
    ):
        cfg.pop(key, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        if name.startswith(head_prefixes):
            continue
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_SAMPLES)
        sample = flat[::step][:_FINGERPRINT_SAMPLES].to(torch.float32).cpu()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def save_side(model, directory: str | Path) -> None:
    """Write ``model``'s side network and its config into ``directory``; the weights first, the config last."""
    directory = Path(directory)
    config = model.ladder_config
    config.backbone_name = getattr(model.backbone.config, "_name_or_path", None) or None
    config.backbone_revision = getattr(model.backbone.config, "_commit_hash", None)
    config.backbone_fingerprint = backbone_fingerprint(model)
    atomic_save_tensors(directory / WEIGHTS_NAME, model.side.state_dict(), metadata={"format": "pt"})
    config.save(directory)


def read_side_config(directory: str | Path) -> LadderConfig:
    """The :class:`LadderConfig` saved in ``directory``; a missing folder or bad file is a :class:`CheckpointError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint folder at {directory}")
    try:
        return LadderConfig.load(directory)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_side_weights(model, directory: str | Path, saved: LadderConfig) -> None:
    """Check that ``model``'s backbone is the one ``saved`` was trained on, then load the side weights into it.

    Raises:
        CheckpointError: missing/corrupt files, or a backbone other than the one the side network was trained on.
    """
    directory = Path(directory)
    actual = backbone_fingerprint(model)
    if saved.backbone_fingerprint not in (None, "", actual, backbone_fingerprint(model, legacy=True)):
        raise CheckpointError(
            f"{directory} was trained on backbone {saved.backbone_name!r} "
            f"(fingerprint {saved.backbone_fingerprint}); "
            f"this backbone has fingerprint {actual}: load it onto the same backbone"
        )
    state = load_tensors(directory / WEIGHTS_NAME)
    try:
        model.side.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME} does not fit this side network: {str(e).splitlines()[0]}"
        ) from None


def saved_num_labels(directory: str | Path) -> int | None:
    """The number of labels of a saved classification head: the rows of its last weight matrix."""
    state = load_tensors(Path(directory) / WEIGHTS_NAME)
    heads = sorted(
        (k for k, v in state.items() if k.startswith("head.") and k.endswith(".weight") and v.dim() == 2),
        key=lambda k: int(k.split(".")[1]) if k.split(".")[1].isdigit() else -1,
    )
    return state[heads[-1]].shape[0] if heads else None


def load_recorded_backbone(directory: str | Path, saved: LadderConfig, **kwargs):
    """Load the backbone ``saved`` recorded (alias, hub id or folder) with its task head and number of labels."""
    if not saved.backbone_name or not saved.task_head:
        raise CheckpointError(
            f"{directory} does not record its backbone: pass one, LadderModel.from_pretrained(backbone, directory)"
        )
    if saved.task_head == "sequence_classification":
        kwargs.setdefault("num_labels", saved_num_labels(directory))
    try:
        return load_backbone(saved.backbone_name, saved.task_head, **kwargs)
    except ConfigError as e:
        raise CheckpointError(f"{directory}: {e}") from None


def check_head(backbone, head: str, directory: str | Path, saved: LadderConfig) -> None:
    """Refuse, in one line, a backbone whose task head or label count differs from the checkpoint's."""
    if saved.task_head and head != saved.task_head:
        raise CheckpointError(
            f"{directory} was trained on backbone {saved.backbone_name!r} with a {saved.task_head} head "
            f"(side network); this backbone has a {head} head ({type(backbone).__name__})"
        )
    if head == "sequence_classification":
        expected, actual = saved_num_labels(directory), backbone.config.num_labels
        if expected is not None and expected != actual:
            raise CheckpointError(
                f"{directory} was trained on backbone {saved.backbone_name!r} with {expected} labels; "
                f"this backbone has num_labels={actual}: "
                f"load it with num_labels={expected}"
            )
