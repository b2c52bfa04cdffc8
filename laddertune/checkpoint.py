"""Side-only checkpoints: atomic writes, safetensors (no pickle), and a fingerprint of the backbone.

A checkpoint folder holds ``ladder_model.safetensors`` (the side network's own ``state_dict()``, never a backbone
weight) and ``ladder_config.json`` (with the backbone's name, revision and fingerprint). Every file is written to a
temporary name in the same folder, flushed to disk and renamed, so a crash leaves the old file or the new one,
never half of one. The trainer's checkpoint folders also carry a ``SHA256SUMS`` list (:func:`write_checksums`),
checked before anything is loaded from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import LadderConfig
from .errors import CheckpointError, ConfigError

WEIGHTS_NAME = "ladder_model.safetensors"
CHECKSUMS_NAME = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` checks a checkpoint folder by hand
# Values sampled per tensor for the fingerprint: enough to tell checkpoints apart, cheap for billions of weights.
_FINGERPRINT_SAMPLES = 4096


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


def atomic_save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None
) -> None:
    """``safetensors.torch.save_file``, atomically (the tensors are written to a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({str(e).splitlines()[0] if str(e) else e})"
        ) from None


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
    config = model.config
    config.backbone_name = getattr(model.backbone.config, "_name_or_path", None) or None
    config.backbone_revision = getattr(model.backbone.config, "_commit_hash", None)
    config.backbone_fingerprint = backbone_fingerprint(model)
    atomic_save_tensors(directory / WEIGHTS_NAME, model.side.state_dict(), metadata={"format": "pt"})
    config.save(directory)


def load_side(backbone, directory: str | Path):
    """Rebuild the LadderModel saved in ``directory`` next to ``backbone``.

    Raises:
        CheckpointError: missing/corrupt files, or a backbone other than the one the side network was trained on.
    """
    from .model import LadderModel

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint folder at {directory}")
    try:
        config = LadderConfig.load(directory)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    saved_fingerprint = config.backbone_fingerprint
    model = LadderModel(backbone, config)  # no pruning or Fisher pass: the weights come from the file
    actual = backbone_fingerprint(model)
    if saved_fingerprint and saved_fingerprint != actual:
        raise CheckpointError(
            f"{directory} was trained on backbone {config.backbone_name!r} (fingerprint {saved_fingerprint}); "
            f"this backbone has fingerprint {actual}: load it onto the same backbone"
        )
    state = load_tensors(directory / WEIGHTS_NAME)
    try:
        model.side.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME} does not fit this side network: {str(e).splitlines()[0]}"
        ) from None
    return model
