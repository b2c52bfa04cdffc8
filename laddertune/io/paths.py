"""Local paths written into a folder relative to that folder, so that the folder can be moved or copied.

A run folder or a checkpoint copied to another machine must still evaluate and predict: an absolute path
(``/home/me/bert``) would point at the old place. :func:`portable_path` writes a local path as ``./x`` or ``../x``
relative to the folder that records it, :func:`resolve_portable` reads it back against where that folder is now.
The leading ``./`` or ``../`` is the marker: an alias (``minilm``) or a hub id (``org/name``) never starts so, and
is kept as it is.
"""

from __future__ import annotations

import os
from pathlib import Path


def portable_path(value: str | None, directory: str | Path, *, must_exist: bool = True) -> str | None:
    """``value`` relative to ``directory`` when it is a local path (an existing one, with ``must_exist``), marked
    by a leading ``./`` or ``../``; anything else unchanged."""
    if not isinstance(value, str) or not value or (must_exist and not os.path.exists(value)):
        return value
    rel = os.path.relpath(Path(value).resolve(), Path(directory).resolve())
    return rel if rel == ".." or rel.startswith("../") else f"./{rel}" if rel != "." else "."


def is_portable(value) -> bool:
    return isinstance(value, str) and (value in (".", "..") or value.startswith(("./", "../")))


def resolve_portable(value, directory: str | Path):
    """Inverse of :func:`portable_path`: a marked relative path resolved against ``directory``; others unchanged."""
    return os.path.normpath(Path(directory).resolve() / value) if is_portable(value) else value
