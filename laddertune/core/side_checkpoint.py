"""Side-only checkpoints: the side network's weights and config, tied to the backbone by a fingerprint.

A checkpoint folder holds ``ladder_model.safetensors`` (the side network's own ``state_dict()``, never a backbone
weight) and ``ladder_config.json`` (with the backbone's name, revision and fingerprint), each written atomically
(:mod:`laddertune.io`). :meth:`LadderModel.from_pretrained` rebuilds the model and checks the fingerprint here.

Two files make the folder one that transformers reads too: ``model.safetensors.index.json``, transformers' index of
a sharded checkpoint, names ``ladder_model.safetensors`` as the file holding the LadderModel's ``side.*`` weights
(``transformers.Trainer`` resumes from and loads the best model of any folder with an index; the backbone's weights
are absent from it, as ``LadderModel._keys_to_ignore_on_save`` says), and ``generation_config.json`` carries an LM
head's generation defaults (``model.generation_config``), as ``PreTrainedModel.save_pretrained`` writes it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..io import (
    atomic_save_tensors,
    load_tensors,
    portable_path,
    resolve_portable,
    save_json,
    verify_checksums,
)
from .backbones import load_backbone
from .config import LadderConfig
from .fingerprint import (
    legacy_fingerprint,
    signature_mismatch,
    signature_samples,
    structure_fingerprint,
    value_signature,
)

WEIGHTS_NAME = "ladder_model.safetensors"
INDEX_NAME = "model.safetensors.index.json"  # transformers' SAFE_WEIGHTS_INDEX_NAME
GENERATION_CONFIG_NAME = "generation_config.json"

logger = logging.getLogger(__name__)


def save_side(model, directory: str | Path, state: dict | None = None) -> None:
    """Write ``model``'s side network and its config into ``directory``; the weights first, the config last.

    Args:
        model: the LadderModel.
        directory: the folder (created).
        state: the side network's state dict to write (default ``model.side.state_dict()``).
    """
    directory = Path(directory)
    state = model.side.state_dict() if state is None else state
    config = model.ladder_config
    config.backbone_name = getattr(model.backbone.config, "_name_or_path", None) or None
    config.backbone_revision = getattr(model.backbone.config, "_commit_hash", None)
    if (
        config.variant.runs_backbone
    ):  # else the backbone was stripped to its embeddings: its full one was recorded
        config.backbone_fingerprint = structure_fingerprint(model)
        config.backbone_signature = value_signature(model)
    if config.task_head == "sequence_classification":  # the class names travel with the side network
        bc = model.backbone.config
        config.label_names = [str(bc.id2label.get(i, i)) for i in range(bc.num_labels)]
        config.problem_type = bc.problem_type
    atomic_save_tensors(directory / WEIGHTS_NAME, state, metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": {f"side.{k}": WEIGHTS_NAME for k in state}}
    save_json(directory / INDEX_NAME, index)
    _save_generation_config(model, directory)
    # a backbone folder is recorded relative to the checkpoint (./x, ../x), so the pair can be moved together
    dataclasses.replace(config, backbone_name=portable_path(config.backbone_name, directory)).save(directory)


def _save_generation_config(model, directory: Path) -> None:
    generation_config = getattr(model, "generation_config", None)
    if generation_config is None:
        return
    try:
        generation_config.save_pretrained(directory)
    except (
        ValueError
    ) as e:  # transformers refuses to write a config it finds inconsistent; the weights still count
        logger.warning("%s not written: %s", GENERATION_CONFIG_NAME, str(e).splitlines()[0])


def read_side_config(directory: str | Path) -> LadderConfig:
    """The :class:`LadderConfig` saved in ``directory``; a missing folder or bad file is a :class:`CheckpointError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint folder at {directory}")
    try:
        config = LadderConfig.load(directory)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    config.backbone_name = resolve_portable(config.backbone_name, directory)
    return config


def restore_labels(backbone, saved: LadderConfig) -> None:
    """Put the saved class names and problem type back into ``backbone.config`` (``id2label``/``label2id``)."""
    if saved.label_names:
        backbone.config.id2label = dict(enumerate(saved.label_names))
        backbone.config.label2id = {name: i for i, name in enumerate(saved.label_names)}
    if saved.problem_type:
        backbone.config.problem_type = saved.problem_type


def load_side_weights(model, directory: str | Path, saved: LadderConfig) -> None:
    """Check that ``model``'s backbone is the one ``saved`` was trained on, then load the side weights into it.

    A folder with a ``SHA256SUMS`` (a run's checkpoint) is checked against it first; one without (what
    ``save_pretrained`` writes) loads as it is.

    Raises:
        CheckpointError: missing/corrupt files, or a backbone other than the one the side network was trained on.
    """
    directory = Path(directory)
    verify_checksums(directory, required=False)
    why = backbone_mismatch(model, saved)
    if why:
        raise CheckpointError(
            f"{directory} was trained on backbone {saved.backbone_name!r} "
            f"(fingerprint {saved.backbone_fingerprint}); this backbone differs ({why}): "
            f"load it onto the same backbone, in any dtype"
        )
    state = load_tensors(directory / WEIGHTS_NAME)
    try:
        model.side.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME} does not fit this side network: {str(e).splitlines()[0]}"
        ) from None


def backbone_mismatch(model, saved: LadderConfig) -> str | None:
    """None when ``model``'s backbone is the one ``saved`` was trained on (in any dtype), else why not."""
    if saved.backbone_signature is None:  # a laddertune 0.1 checkpoint: its exact, dtype-bound fingerprint
        actual = legacy_fingerprint(model)
        ok = not saved.backbone_fingerprint or saved.backbone_fingerprint == actual
        return None if ok else f"fingerprint {actual}"
    actual = structure_fingerprint(model)
    if saved.backbone_fingerprint and saved.backbone_fingerprint != actual:
        return f"another config or other parameter names: fingerprint {actual}"
    samples = signature_samples(saved.backbone_signature)  # the same strided positions as when it was saved
    return signature_mismatch(saved.backbone_signature, value_signature(model, samples))


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
