"""The lowest layer: files that survive a crash.

Atomic writes (temporary file, fsync, rename), JSON and safetensors reading and writing with one-line errors, and
``SHA256SUMS`` lists for checkpoint folders, advisory locks between processes. Everything above may use it; it
imports nothing of laddertune but :mod:`laddertune.errors`.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "CHECKSUMS_NAME": ".checksums",
    "verify_checksums": ".checksums",
    "write_checksums": ".checksums",
    "listed_names": ".checksums",
    "check_writable": ".files",
    "Lock": ".locks",
    "hold_lock": ".locks",
    "release_lock": ".locks",
    "atomic_save_tensors": ".tensors",
    "atomic_write_bytes": ".files",
    "atomic_write_text": ".files",
    "load_json": ".files",
    "load_tensors": ".tensors",
    "save_json": ".files",
    "portable_path": ".paths",
    "resolve_portable": ".paths",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
