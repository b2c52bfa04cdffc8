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
from .config import LadderConfig

WEIGHTS_NAME = "ladder_model.safetensors"
# Values sampled per tensor for the fingerprint: enough to tell checkpoints apart, cheap for billions of weights.
_FINGERPRINT_SAMPLES = 4096


def backbone_fingerprint(model) -> str:
    """A short hash of the backbone's config and weights (excluding its new task head, which LST never uses).

    Each weight contributes its name, shape, dtype and an evenly strided sample of its values, so a checkpoint is
    tied to the weights it was trained on without reading billions of numbers.
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
    if config.task_head == "sequence_classification":  # the class names travel with the side network
        bc = model.backbone.config
        config.label_names = [str(bc.id2label.get(i, i)) for i in range(bc.num_labels)]
        config.problem_type = bc.problem_type
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


def restore_labels(backbone, saved: LadderConfig) -> None:
    """Put the saved class names and problem type back into ``backbone.config`` (``id2label``/``label2id``)."""
    if saved.label_names:
        backbone.config.id2label = dict(enumerate(saved.label_names))
        backbone.config.label2id = {name: i for i, name in enumerate(saved.label_names)}
    if saved.problem_type:
        backbone.config.problem_type = saved.problem_type


def load_side_weights(model, directory: str | Path, saved: LadderConfig) -> None:
    """Check that ``model``'s backbone is the one ``saved`` was trained on, then load the side weights into it.

    Raises:
        CheckpointError: missing/corrupt files, or a backbone other than the one the side network was trained on.
    """
    directory = Path(directory)
    actual = backbone_fingerprint(model)
    if saved.backbone_fingerprint and saved.backbone_fingerprint != actual:
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
