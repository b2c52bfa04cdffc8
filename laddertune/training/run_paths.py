"""Local paths in a run folder's ``train_config.json`` and ``results.json``, stored relative to the run folder.

A run folder moved or copied to another machine must still evaluate, predict and resume: the output
folder, the data, the tap cache and a backbone folder are written as ``./x`` / ``../x`` relative to the run folder
(:func:`laddertune.io.portable_path`) and resolved against its place when read. Aliases and hub ids stay as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError
from ..io import portable_path, resolve_portable


def relative_paths(data: dict, fields: tuple[str, ...], directory: str | Path) -> dict:
    """``data`` with the local paths of ``fields`` relative to ``directory`` (the backbone only if it exists: it
    may be an alias or a hub id). A field may hold a mapping of paths (a vision-and-language run's per-task
    annotation files)."""
    return {
        k: _each(v, lambda p, k=k: portable_path(p, directory, must_exist=k == "backbone"))
        if k in fields
        else v
        for k, v in data.items()
    }


def resolved_paths(data: dict, fields: tuple[str, ...], directory: str | Path) -> dict:
    """Inverse of :func:`relative_paths` (files written before paths were relative hold absolute ones: kept)."""
    if not isinstance(data, dict):
        return data  # from_dict says what is wrong
    return {
        k: _each(v, lambda p: resolve_portable(p, directory)) if k in fields else v for k, v in data.items()
    }


def _each(value, convert):
    """``convert`` applied to a path, or to each path of a mapping (other values are left for the checks)."""
    if isinstance(value, dict):
        return {k: convert(v) if isinstance(v, str) else v for k, v in value.items()}
    return convert(value)


def same_path(a, b) -> bool:
    """Whether two recorded values name the same thing (two spellings of one local path count as the same; two
    mappings of paths, entry by entry)."""
    if a == b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_path(a[k], b[k]) for k in a)
    if isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return False


def moved_folder(recorded) -> bool:
    """Whether ``recorded`` (as read back) names a local folder that is not there any more."""
    return isinstance(recorded, str) and os.path.isabs(recorded) and not os.path.exists(recorded)


def require_backbone(name: str, where: str | Path) -> str:
    """``name``, unless it is a backbone folder that is not there (a run folder copied without its backbone, or
    to where the recorded relative place is empty): then one line saying to pass the backbone."""
    if moved_folder(name):
        raise CheckpointError(
            f"{where} was trained on the backbone folder {name}, which is not there (a moved or copied run?): "
            "pass --backbone with where that backbone is now"
        )
    return name
