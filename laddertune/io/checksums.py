"""``SHA256SUMS`` lists for checkpoint folders, in ``sha256sum``'s format (``sha256sum -c SHA256SUMS`` checks one).

Safetensors files carry no checksum of their own: a flipped bit in a tensor's bytes loads without complaint, so
folders that must be trusted on resume carry a list written last and checked before anything is loaded.

Where a list is expected (every checkpoint folder of a training run, every tap-cache entry: laddertune has always
written one there) its absence is itself an error, so deleting ``SHA256SUMS`` cannot switch the check off. A side
network saved by ``LadderModel.save_pretrained`` has no list (``required=False``: checked only when one is there).
A file the list does not name fails the check too (an incomplete list, or a file added to the folder): the
training loop never deletes such a folder, it asks for the file to be moved out
(:func:`laddertune.training.checkpoint_folders.foreign_entries`).
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


def listed_names(directory: str | Path) -> set[str]:
    """The file names ``directory``'s ``SHA256SUMS`` lists (none when it has no readable list)."""
    try:
        lines = (Path(directory) / CHECKSUMS_NAME).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return set()
    return {line.partition("  ")[2] for line in lines if "  " in line}


def verify_checksums(directory: str | Path, *, required: bool = True) -> None:
    """Check ``directory`` against its ``SHA256SUMS``.

    Args:
        directory: the folder.
        required: a missing list is an error (every folder laddertune checks on load or resume has one); False
            for a side network saved by ``save_pretrained``, checked only when it has one.

    Raises:
        CheckpointError: the list is missing (with ``required``), malformed or empty, a listed file is missing or
            changed, or a file is not listed.
    """
    directory = Path(directory)
    path = directory / CHECKSUMS_NAME
    if not path.is_file():
        if required and directory.is_dir():
            raise CheckpointError(
                f"{directory} has no {CHECKSUMS_NAME}: it cannot be verified (laddertune writes one into every "
                "checkpoint of a run and every tap-cache entry)"
            )
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
    if not listed:
        raise CheckpointError(f"{path} lists no file")
    for name in _listed_files(directory):
        if name not in listed:
            raise CheckpointError(
                f"{directory / name} is not in {CHECKSUMS_NAME}: a file added to the folder, or an incomplete list"
            )
    for name, digest in listed.items():
        file = directory / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (listed in {CHECKSUMS_NAME})")
        if _sha256(file) != digest:
            raise CheckpointError(
                f"{file} is corrupt or truncated: its SHA-256 differs from {CHECKSUMS_NAME}"
            )
