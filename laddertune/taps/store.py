"""Tap cache entries on disk: build one (estimated, checked, atomic), find a matching one, read batches from it.

An entry is a folder ``<cache dir>/<hash of key and layers>/`` holding ``manifest.json`` (key fields, cached layers per
stack, dtype, the width of each tap, and per shard the example keys in order), ``shard-NNNNN.safetensors`` files and ``SHA256SUMS``.
A shard holds, per stack and tap, one ``(tokens, width)`` tensor of its examples' real tokens back to back, and per
stack an ``offsets`` tensor ``(examples + 1,)``: example k owns rows ``offsets[k]:offsets[k+1]``.

Why safetensors: a maintained format that ``safe_open`` memory-maps (from 0.8 a tensor it returns is a view into
the mapping, not a copy), so a batch reads only its own rows and an epoch never loads the whole cache; no pickle;
and the same writer as the checkpoints (:func:`laddertune.io.atomic_save_tensors`). A batch's taps are handed over
packed (:class:`~laddertune.core.packed_tap.PackedTap`): the rows of its stored positions, no padding.

A build goes to ``.building-<name>-<pid>/`` and is renamed into place only when complete with its checksums, so a
reader never sees half an entry; a leftover from a killed build is removed and rebuilt, and an entry whose checksums
fail (or that has none, or whose manifest is not one) is removed and rebuilt.

Runs sharing a cache folder: building an entry, and removing a damaged one, hold that entry's advisory lock
(``.lock-<name>``, :func:`laddertune.io.hold_lock`), so a second run never deletes a build in progress; it stops with
one line naming the builder's process id (run it again once that build is done: it then reuses the entry).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from ..core.packed_tap import PackedTap
from ..core.side_network import EMBED
from ..core.tap_projection import FINAL
from ..core.taps import collect_taps
from ..errors import CheckpointError, ConfigError, DataError
from ..io import atomic_save_tensors, hold_lock, load_json, save_json, verify_checksums, write_checksums
from .key import TAP_DTYPES, cache_key, example_key, key_name

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARD_BYTES = 256 * 1024**2  # a shard's size target: few files, yet a build flushes often
FORMAT_VERSION = 2  # 2: widths per tap (projected taps, a full-width FINAL)
INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "labels")


def _masks(batch: dict, stacks: list[str]) -> dict[str, torch.Tensor]:
    """(B, T_stack) bool: the positions whose taps are stored (real tokens; for T5's decoder, the target's)."""
    out = {}
    for name in stacks:
        out[name] = batch["labels"] != -100 if name == "decoder" else batch["attention_mask"].bool()
    return out


def estimate_bytes(
    batches: list[dict], layers: dict[str, list[int]], widths: dict[str, dict[str, int]], dtype: str
) -> int:
    """Bytes of the shards for these batches: real tokens x the widths of the embedding and cached taps x dtype
    size."""
    item = torch.empty((), dtype=TAP_DTYPES[dtype]).element_size()
    total = 0
    for batch in batches:
        for name, mask in _masks(batch, list(layers)).items():
            total += int(mask.sum()) * sum(widths[name][str(t)] for t in (EMBED, *layers[name])) * item
    return total


def tap_widths(model, layers: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    """Per stack, the width of each tap kept: projected taps k wide, the final shortcut's FINAL d wide."""
    out = {}
    for name, ids in layers.items():
        stack = model.side.stacks[name]
        out[name] = {str(t): stack.width if t == FINAL else stack.tap_width for t in (EMBED, *ids)}
    return out


class TapCache:
    """One complete, checked entry, opened for reading (its shards memory-mapped)."""

    def __init__(self, path: Path, manifest: dict, built: bool = False, build_seconds: float = 0.0) -> None:
        self.path, self.manifest, self.built, self.build_seconds = path, manifest, built, build_seconds
        self.layers = {k: list(v) for k, v in manifest["layers"].items()}
        self.seq2seq = "decoder" in self.layers
        files = [safe_open(str(path / s["file"]), framework="pt") for s in manifest["shards"]]
        self._offsets = {
            (k, name): f.get_tensor(f"{name}.offsets").tolist()
            for k, f in enumerate(files)
            for name in self.layers
        }
        # Each shard's (tokens, width) taps as views into its mapping, taken once: a batch's rows are then torch
        # slices (about 1 us each) instead of a get_slice call per example and tap (about 12).
        self._rows = {
            (k, name, t): f.get_tensor(f"{name}.{t}")
            for k, f in enumerate(files)
            for name, ids in self.layers.items()
            for t in (EMBED, *ids)
        }
        self.index = {
            key: (k, row) for k, s in enumerate(manifest["shards"]) for row, key in enumerate(s["keys"])
        }

    @property
    def bytes(self) -> int:
        return sum((self.path / s["file"]).stat().st_size for s in self.manifest["shards"])

    def taps(self, batch: dict, layers: dict[str, list[int]]) -> dict[str, dict[int, PackedTap]]:
        """The taps of a collated batch, each as the rows of the batch's stored positions (real tokens; T5's decoder:
        the target's), a :class:`~laddertune.core.packed_tap.PackedTap` whose padded form holds zeros elsewhere,
        which no loss reads: attention masks them out, and classification pools and LM losses skip them."""
        masks = _masks(batch, list(layers))
        places = []  # per example: its shard and row
        for i in range(len(batch["input_ids"])):
            key = example_key(batch, i, self.seq2seq)
            if key not in self.index:
                raise DataError(f"an example is not in the tap cache {self.path} (was the data changed?)")
            places.append(self.index[key])
        out: dict[str, dict[int, PackedTap]] = {}
        for name, mask in masks.items():
            spans = [
                (k, self._offsets[(k, name)][row], self._offsets[(k, name)][row + 1]) for k, row in places
            ]
            index = mask.flatten().nonzero().squeeze(1)  # the rows' positions, shared by the stack's taps
            stack = {}
            for t in (EMBED, *layers[name]):
                rows = torch.cat([self._rows[(k, name, t)][start:end] for k, start, end in spans])
                stack[t] = PackedTap(rows, mask, index)
            out[name] = stack
        return out

    def collate(self, base: Callable[[list[dict]], dict], layers: dict[str, list[int]]):
        """Wrap a batch function: each batch also carries ``taps`` for ``LadderModel.forward(taps=...)``."""

        def with_taps(examples: list[dict]) -> dict:
            batch = base(examples)
            batch["taps"] = self.taps(batch, layers)
            return batch

        return with_taps


def _lock(directory: Path, name: str):
    """The advisory lock of entry ``name`` (held while it is built or removed)."""
    return hold_lock(directory / f".lock-{name}", f"tap cache entry {directory / name}")


def _find(directory: Path, key: dict, layers: dict[str, list[int]]) -> TapCache | None:
    """A complete entry with this key whose cached layers include ``layers``; a damaged one is removed."""
    for entry in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            manifest = load_json(entry / MANIFEST)
        except ConfigError:
            continue  # a folder that is no entry (or one being removed)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), dict):
            _remove_damaged(directory, entry, f"{MANIFEST} is not a manifest")
            continue
        cached = manifest["layers"]
        if manifest.get("key") != key or set(cached) != set(layers):
            continue
        if not all(isinstance(cached[s], list) and set(layers[s]) <= set(cached[s]) for s in layers):
            continue
        try:
            verify_checksums(entry, required=True)
            return TapCache(entry, manifest)
        except (CheckpointError, OSError, KeyError, ValueError, TypeError, AttributeError) as e:
            _remove_damaged(directory, entry, str(e).splitlines()[0] if str(e) else type(e).__name__)
    return None


def _remove_damaged(directory: Path, entry: Path, why: str) -> None:
    """Remove a damaged entry under its lock (when another run holds the lock, it is rebuilding it: left alone)."""
    try:
        lock = _lock(directory, entry.name)
    except ConfigError:
        return
    with lock:
        logger.warning("tap cache %s is damaged (%s); removing it and building it again", entry, why)
        shutil.rmtree(entry, ignore_errors=True)


def open_tap_cache(
    directory: str | Path,
    model,
    tokenizer,
    examples: list[dict],
    collate: Callable[[list[dict]], dict],
    *,
    max_length: int,
    fmt: str,
    dtype: str = "float32",
    batch_size: int = 32,
    notify: Callable[[str], None] | None = None,
) -> TapCache:
    """Open the entry of ``directory`` that serves this model and data, or build it first.

    Args:
        directory: the cache folder (created when missing); it may hold entries of many backbones and datasets.
        model: a LadderModel; its kept layers are what must be cached, its backbone's fingerprint is in the key.
        tokenizer, examples, collate, max_length, fmt: the data, as the run batches it.
        dtype: ``float32`` (exact), ``bfloat16`` or ``float16`` (half the disk).
        batch_size: examples per backbone forward while building.
        notify: called with one-line messages (the size estimate before writing, the build's result).

    Raises:
        ConfigError: backbone dropout is on (the taps would be random), a bad dtype, not enough disk, or another
            process is building this entry (its id in the message).
    """
    if model.ladder_config.backbone_dropout:
        raise ConfigError(
            "a tap cache needs backbone dropout off: with dropout the backbone's taps differ in every epoch"
        )
    if dtype not in TAP_DTYPES:
        raise ConfigError(f"tap dtype must be one of {', '.join(TAP_DTYPES)}, got {dtype!r}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"tap cache {directory} is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    say = notify or logger.info
    key = cache_key(model, tokenizer, examples, max_length=max_length, fmt=fmt, dtype=dtype)
    layers = {name: list(stack.tap_layers) for name, stack in model.side.stacks.items()}
    found = _find(directory, key, layers)
    if found is None:
        with _lock(
            directory, key_name({**key, "layers": layers})
        ):  # another run building it: one line, its pid
            found = _find(directory, key, layers)  # built by another run while this one looked
            if found is None:
                return _build(directory, model, examples, collate, key, layers, batch_size, say)
    say(f"tap cache: reusing entry {found.path.name} ({found.bytes / 1024**2:.1f} MiB)")
    return found


def _build(directory, model, examples, collate, key, layers, batch_size, say) -> TapCache:
    t0 = time.perf_counter()
    stacks = list(layers)
    widths = tap_widths(model, layers)
    batches = [collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]
    need = estimate_bytes(batches, layers, widths, key["dtype"])
    free = shutil.disk_usage(directory).free
    if need * 1.05 > free:
        raise ConfigError(
            f"not enough disk for the tap cache in {directory}: it needs about {need / 1024**3:.2f} GiB, "
            f"{free / 1024**3:.2f} GiB are free"
        )
    say(
        f"tap cache: writing about {need / 1024**2:.1f} MiB of {key['dtype']} taps for {len(examples)} examples"
    )
    name = key_name({**key, "layers": layers})
    # a killed build (its builder would hold the lock otherwise): never read, rebuilt from scratch
    for stale in directory.glob(f".building-{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory / f".building-{name}-{os.getpid()}"
    tmp.mkdir()
    dtype = TAP_DTYPES[key["dtype"]]
    shards, seen = [], set()
    try:
        buffer, keys, size = _empty(layers), [], 0
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k in INPUTS}
            taps = collect_taps(model, **inputs, layers=layers)
            masks = _masks(batch, stacks)
            for i in range(batch["input_ids"].shape[0]):
                ek = example_key(batch, i, "decoder" in layers)
                if ek in seen:  # the same tokens have the same taps: store them once
                    continue
                seen.add(ek)
                keys.append(ek)
                for s in stacks:
                    for t in (EMBED, *layers[s]):
                        rows = taps[s][t][i][masks[s][i]].to(dtype)  # (tokens, width)
                        buffer[s][t].append(rows)
                        size += rows.numel() * rows.element_size()
            if size >= SHARD_BYTES:
                shards.append(_flush(tmp, len(shards), buffer, keys))
                buffer, keys, size = _empty(layers), [], 0
        if keys:
            shards.append(_flush(tmp, len(shards), buffer, keys))
        manifest = {
            "version": FORMAT_VERSION,
            "key": key,
            "layers": layers,
            "widths": widths,
            "shards": shards,
        }
        save_json(tmp / MANIFEST, manifest)
        write_checksums(tmp)
        target = directory / name
        shutil.rmtree(target, ignore_errors=True)  # an entry under this name failed its checks in _find
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    cache = TapCache(target, manifest, built=True, build_seconds=seconds)
    say(f"tap cache: wrote {cache.bytes / 1024**2:.1f} MiB as entry {target.name} in {seconds:.1f} s")
    return cache


def _empty(layers: dict[str, list[int]]) -> dict[str, dict[int, list[torch.Tensor]]]:
    return {s: {t: [] for t in (EMBED, *ids)} for s, ids in layers.items()}


def _flush(tmp: Path, k: int, buffer: dict, keys: list[str]) -> dict:
    """Write one shard; returns its manifest record."""
    tensors = {}
    for s, taps in buffer.items():
        lengths = [rows.shape[0] for rows in taps[EMBED]]
        tensors[f"{s}.offsets"] = torch.tensor(
            [0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64
        )
        for t, rows in taps.items():
            tensors[f"{s}.{t}"] = torch.cat(rows)  # (tokens, width)
    file = f"shard-{k:05d}.safetensors"
    atomic_save_tensors(tmp / file, tensors, metadata={"format": "pt"})
    return {"file": file, "keys": list(keys)}
