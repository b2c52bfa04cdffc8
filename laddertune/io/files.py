"""Files that survive a crash: atomic writes and JSON (tensors: :mod:`.tensors`).

Every file is written to a temporary name in the same folder, flushed to disk and renamed, so a crash leaves the
old file or the new one, never half of one. Readers turn any damage into a one-line :class:`ConfigError` or
:class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the complete new one."""
    _atomic_write(Path(path), lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_json(path: str | Path, data) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``path``, atomically; returns the path."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)


def load_json(path: str | Path):
    """Read a JSON file the user may have damaged; any problem is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {path.name} in {path.parent}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: 5000-digit ints
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path} is not a readable JSON file: {first}") from None
