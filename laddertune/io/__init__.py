"""The lowest layer: files that survive a crash.

Atomic writes (temporary file, fsync, rename), JSON and safetensors reading and writing with one-line errors, and
``SHA256SUMS`` lists for checkpoint folders, advisory locks between processes. Everything above may use it; it
imports nothing of laddertune but :mod:`laddertune.errors`.
"""

from .checksums import CHECKSUMS_NAME, listed_names, verify_checksums, write_checksums
from .files import (
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    load_json,
    load_tensors,
    save_json,
)
from .locks import Lock, hold_lock, release_lock
from .paths import portable_path, resolve_portable

__all__ = [
    "CHECKSUMS_NAME",
    "Lock",
    "atomic_save_tensors",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "hold_lock",
    "listed_names",
    "load_json",
    "load_tensors",
    "portable_path",
    "release_lock",
    "resolve_portable",
    "save_json",
    "verify_checksums",
    "write_checksums",
]
