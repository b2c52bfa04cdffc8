"""``SHA256SUMS`` lists for checkpoint folders, in ``sha256sum``'s format (``sha256sum -c SHA256SUMS`` checks one).

Safetensors files carry no checksum of their own: a flipped bit in a tensor's bytes loads without complaint, so
folders that must be trusted on resume carry a list written last and checked before anything is loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import CheckpointError
from .files import atomic_write_text

CHECKSUMS_NAME = "SHA256SUMS"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed_files(directory: Path) -> list[str]:
    """The files a checksum list covers: every plain file but the list itself and hidden temporaries."""
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.is_file() and p.name != CHECKSUMS_NAME and not p.name.startswith(".")
    )


def write_checksums(directory: str | Path) -> None:
    """Write ``SHA256SUMS`` (``sha256sum``'s format) over every file in ``directory``; call it last.

    Safetensors files carry no checksum of their own: a flipped bit in a tensor's bytes loads without complaint.
    The list lets :func:`verify_checksums` detect any change, truncation or missing file.
    """
    directory = Path(directory)
    lines = [f"{_sha256(directory / name)}  {name}\n" for name in _listed_files(directory)]
    atomic_write_text(directory / CHECKSUMS_NAME, "".join(lines))


def verify_checksums(directory: str | Path) -> None:
    """Check ``directory`` against its ``SHA256SUMS``; a folder without one (``save_pretrained``) passes.

    Raises:
        CheckpointError: a listed file is missing or changed, a file is not listed, or the list is malformed.
    """
    directory = Path(directory)
    path = directory / CHECKSUMS_NAME
    if not path.is_file():
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__})") from None
    listed = {}
    for n, line in enumerate(lines, 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or Path(name).name != name:
            raise CheckpointError(f"{path}:{n}: malformed line (expected '<sha256>  <file name>')")
        listed[name] = digest
    for name in _listed_files(directory):
        if name not in listed:
            raise CheckpointError(
                f"{directory / name} is not in {CHECKSUMS_NAME}: the checkpoint is incomplete"
            )
    for name, digest in listed.items():
        file = directory / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (listed in {CHECKSUMS_NAME})")
        if _sha256(file) != digest:
            raise CheckpointError(
                f"{file} is corrupt or truncated: its SHA-256 differs from {CHECKSUMS_NAME}"
            )
