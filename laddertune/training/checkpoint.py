"""Checkpoints of a training run: weights, optimizer, scheduler, RNG states, data order and best-so-far.

A checkpoint folder is written under a temporary name with a ``SHA256SUMS`` list, then swapped in whole;
``checkpoint-last`` keeps its predecessor (``checkpoint-last.old``) until the run finishes, and resuming verifies the
list and falls back to the predecessor when the newest is corrupt. Everything is checked before anything is restored.
No pickle: tensors go to safetensors, the rest to JSON. What the weights are is the method's business
(:meth:`~laddertune.methods.base.TrainingMethod.save_weights`): LST saves only its side network, a baseline only its
trainable parameters.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, output_error
from ..io import (
    atomic_save_tensors,
    atomic_write_text,
    load_tensors,
    portable_path,
    verify_checksums,
    write_checksums,
)
from ..methods.base import TRAINABLE_WEIGHTS
from .checkpoint_folders import check_removable, remove_folder
from .checkpoint_state import check_state

logger = logging.getLogger(__name__)

BASELINE_WEIGHTS = TRAINABLE_WEIGHTS  # what a method without a side network saves
STATE_TENSORS, STATE_JSON = "trainer_state.safetensors", "trainer_state.json"
TASK_NAME = "task.json"  # what prediction needs: task spec, data format, max length, backbone, method


def save_weights(model, directory: Path, method, task: dict | None = None) -> None:
    """What ``method`` (a :class:`~laddertune.methods.base.TrainingMethod`) trains: LST its side network and
    ladder_config.json, a baseline its trainable parameters. With ``task``, also ``task.json`` (see
    :func:`laddertune.training.prediction.task_record`)."""
    if task is not None:  # a backbone folder relative to the checkpoint: the pair can be moved together
        task = {**task, "backbone": portable_path(task["backbone"], directory)}
        atomic_write_text(directory / TASK_NAME, json.dumps(task, indent=2) + "\n")
    method.save_weights(model, directory)


def load_weights(model, directory: Path, method) -> None:
    """Copy weights written by :func:`save_weights` into an already built ``model`` (names and shapes must match);
    the folder's ``SHA256SUMS`` must be there and match."""
    verify_checksums(directory, required=True)
    with torch.no_grad():
        for target, tensor in method.read_weights(model, directory):
            target.copy_(tensor)


def _swap_in(tmp: Path, directory: Path, keep_previous: bool = False) -> None:
    """Replace ``directory`` by the complete folder ``tmp``; the replaced folder becomes ``<name>.old``, kept with
    ``keep_previous`` (the fallback of :func:`resume_checkpoint`). A crash in between leaves a complete folder
    under one of the two names (``<name>.old`` alone when it hit between the renames), never a mix of the two.
    A link is renamed or removed as a link (its target is never touched)."""
    old = directory.with_name(directory.name + ".old")
    if directory.exists() or directory.is_symlink():
        remove_folder(old)
        directory.rename(old)
    tmp.rename(directory)
    if not keep_previous:
        remove_folder(old)


def _write_folder(directory: Path, write: Callable[[Path], None], keep_previous: bool = False) -> None:
    """``write(tmp)`` into ``<name>.tmp``, list its checksums, then swap it in for ``directory``. An error part-way
    removes the temporary folder and leaves ``directory`` as it was; a full disk or another write error is a
    one-line :class:`~laddertune.errors.OutputError`. A folder holding a file laddertune did not write is refused
    before anything is written (:func:`laddertune.training.checkpoint_folders.check_removable`)."""
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    for folder in (tmp, old, directory):  # all that the swap may remove, checked before anything changes
        check_removable(folder)
    remove_folder(tmp)
    try:
        write(tmp)
        write_checksums(tmp)
    except OSError as e:  # ENOSPC, EROFS, EDQUOT...: the previous checkpoint is untouched
        remove_folder(tmp)
        raise output_error(directory, e, "the previous checkpoint there is intact") from None
    except BaseException:
        remove_folder(tmp)
        raise
    _swap_in(tmp, directory, keep_previous)


def save_best(directory: Path, model, method, task: dict | None = None) -> None:
    """Write the weights alone (no optimizer) into ``directory``, swapped in as a whole."""
    _write_folder(directory, lambda tmp: save_weights(model, tmp, method, task))


def save_checkpoint(
    directory: Path, model, method, optimizer, scheduler, state: dict, task: dict | None = None
) -> None:
    """Write a resumable checkpoint into a temporary folder, then swap it in for ``directory`` (keeping the one it
    replaces as ``<name>.old``).

    ``state`` holds the JSON-ready scalars (step, epoch, next batch, best so far, history); this adds the optimizer
    (tensors to safetensors, the rest to JSON), the scheduler and the RNG states of torch, Python and NumPy.
    """
    _write_folder(
        directory, lambda tmp: _write_state(tmp, model, method, optimizer, scheduler, state, task), True
    )


def _write_state(tmp: Path, model, method, optimizer, scheduler, state: dict, task: dict | None) -> None:
    save_weights(model, tmp, method, task)
    opt = optimizer.state_dict()
    tensors, scalars = {"rng.torch": torch.get_rng_state()}, {}
    for i, slots in opt["state"].items():
        for key, value in _flat(slots):
            if torch.is_tensor(value):
                tensors[f"optimizer.{i}.{key}"] = value
            else:
                scalars[f"{i}.{key}"] = value
    np_state = np.random.get_state()
    full = {
        **state,
        "param_names": list(method.trainable(model)),
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict(),
        "rng": {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]},
    }
    atomic_save_tensors(tmp / STATE_TENSORS, tensors)
    atomic_write_text(tmp / STATE_JSON, json.dumps(full) + "\n")


def checkpoint_candidates(output_dir: Path, name: str = "checkpoint-last") -> list[Path]:
    """The resumable checkpoint folders, newest first: ``<name>`` and the previous one, ``<name>.old``."""
    return [c for c in (output_dir / name, output_dir / f"{name}.old") if (c / STATE_JSON).is_file()]


def find_checkpoint(output_dir: Path, name: str = "checkpoint-last") -> Path | None:
    """The newest resumable checkpoint folder (``<name>.old`` when a crash interrupted :func:`_swap_in`)."""
    found = checkpoint_candidates(output_dir, name)
    return found[0] if found else None


def resume_checkpoint(
    output_dir: Path,
    model,
    method,
    optimizer,
    scheduler,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    accumulation: int = 1,
) -> tuple[Path, dict] | None:
    """Restore the newest intact checkpoint of ``output_dir``: ``checkpoint-last``, else the previous one.

    Intact means: its ``SHA256SUMS`` is there and matches (a folder without one is not trusted), and every file
    reads back. When the newest is not intact and the previous one loads, the newest is removed and the previous
    one takes its name, so that the next save again keeps an intact previous checkpoint. A candidate holding a file
    laddertune did not write is refused first, before anything changes (it would be deleted by a later save).
    ``steps_per_epoch`` and ``epochs`` (the run's schedule) let :func:`load_checkpoint` check the data position.

    Returns:
        (folder, JSON state), or None when the run wrote no checkpoint.

    Raises:
        CheckpointError: no candidate is intact (each one's reason in the message), or a user's file in one.
    """
    candidates = checkpoint_candidates(output_dir)
    for directory in candidates:
        check_removable(directory, "a resumed run replaces this folder at its next save")
    errors = []
    for directory in candidates:
        try:
            state = load_checkpoint(
                directory,
                model,
                method,
                optimizer,
                scheduler,
                steps_per_epoch=steps_per_epoch,
                epochs=epochs,
                accumulation=accumulation,
            )
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            logger.warning("%s; resuming from the previous checkpoint, %s", errors[0], directory)
            newest = output_dir / "checkpoint-last"
            remove_folder(newest)
            directory = directory.rename(newest)
        return directory, state
    if errors:
        raise CheckpointError(f"cannot resume {output_dir}: no intact checkpoint ({'; '.join(errors)})")
    return None


def load_checkpoint(
    directory: Path,
    model,
    method,
    optimizer,
    scheduler,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    accumulation: int = 1,
) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns the JSON state (step, epoch, next batch, best...).

    Every file is checked (checksums, names, shapes, structure) before anything is restored, so a corrupt
    checkpoint raises :class:`CheckpointError` and leaves the model, optimizer and RNGs as they were. A folder
    without ``SHA256SUMS`` is refused: every checkpoint a run writes has one. The JSON state's fields are checked
    for type and range (:func:`laddertune.training.checkpoint_state.check_state`; the data position too when
    ``steps_per_epoch`` and ``epochs`` are given).
    """
    verify_checksums(directory, required=True)
    try:
        state = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{directory / STATE_JSON} is unreadable ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("param_names") != list(method.trainable(model)):
        raise CheckpointError(f"{directory} was written for other trainable parameters than this model's")
    check_state(
        state,
        directory,
        scheduler.state_dict(),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        accumulation=accumulation,
    )
    weights = method.read_weights(model, directory)
    tensors = load_tensors(directory / STATE_TENSORS)
    try:
        slots: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                i, name = key.removeprefix("optimizer.").split(".", 1)
                _nest(slots.setdefault(int(i), {}), name, value)
        for key, value in state["optimizer"]["scalars"].items():
            i, name = key.split(".", 1)
            _nest(slots.setdefault(int(i), {}), name, value)
        opt_state = {"state": slots, "param_groups": state["optimizer"]["param_groups"]}
        py, np_state = state["rng"]["python"], state["rng"]["numpy"]
        py_state = (py[0], tuple(py[1]), py[2])
        np_state = (np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:])
        torch_rng = tensors["rng.torch"]
        # throwaway generators check the RNG states; the optimizer checks its groups before it changes anything
        random.Random().setstate(py_state)
        np.random.RandomState().set_state(np_state)
        torch.Generator().set_state(torch_rng)
        optimizer.load_state_dict(opt_state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise CheckpointError(
            f"{directory} holds a malformed trainer state ({type(e).__name__}: {e})"
        ) from None
    with torch.no_grad():
        for target, tensor in weights:
            target.copy_(tensor)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(torch_rng)
    random.setstate(py_state)
    np.random.set_state(np_state)
    return state


def _flat(slots: dict, prefix: str = ""):
    """(name, value) of one parameter's optimizer state; a nested dict's entries as ``outer/inner`` (bitsandbytes'
    8-bit AdamW keeps its quantized moments in one nested dict per parameter)."""
    for key, value in slots.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}/")
        else:
            yield prefix + key, value


def _nest(slot: dict, name: str, value) -> None:
    """Inverse of :func:`_flat` for one entry."""
    *outer, last = name.split("/")
    for key in outer:
        slot = slot.setdefault(key, {})
    slot[last] = value
