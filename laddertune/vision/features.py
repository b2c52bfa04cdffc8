"""Image grid features, extracted once with a frozen vision encoder and stored in HDF5 keyed by image id.

Why HDF5 (h5py): it is the format of the VL-T5 / VL-Adapter feature files the paper's CLIP-T5 trained on, so
their precomputed files load here as they are, and h5py reads one image's features without loading the rest.
Layout, one group per image id (the VL-T5 layout)::

    <img_id>/features   (N, F) float32    region or grid features
    <img_id>/boxes      (N, 4) float32    x1, y1, x2, y2 in PIXELS of the original image (optional)
    <img_id>/img_h, img_w                 scalars, the original image size (needed with boxes)

Files without ``boxes`` (grid features) get the boxes of a square grid. The paper's CLIP RN101 is not in
transformers; the default encoder is transformers' CLIP ViT (``CLIPVisionModel``), and any vision model that
``AutoModel`` loads (a name or a folder with its image processor) works: ViT-style outputs (B, 1 + H*W, C) lose
their class token, conv outputs (B, C, H, W) are flattened; both are max-pooled to ``pool`` x ``pool`` as the
paper pools CLIP's 7x7 grid to 6x6.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel

from ..errors import ConfigError, DataError, import_optional
from .visual_embedding import grid_boxes

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "openai/clip-vit-base-patch32"
EXTRA = "vision"  # h5py and pillow come with laddertune[vision]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def image_files(directory: str | Path) -> list[Path]:
    """The image files of ``directory``, sorted; their stems are the image ids."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"no image folder at {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{directory} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_encoder(name: str, device: str = "cpu"):
    """A frozen vision encoder and its image processor, by hub name or local folder."""
    try:
        processor = AutoImageProcessor.from_pretrained(name)
        model = AutoModel.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load vision encoder {name!r}: {str(e).splitlines()[0]}") from None
    if hasattr(model, "vision_model") and not hasattr(
        model, "embeddings"
    ):  # a full CLIP: keep its vision tower
        model = model.vision_model
    return model.eval().requires_grad_(False).to(device), processor


def grid_of(hidden: torch.Tensor) -> torch.Tensor:
    """An encoder's last hidden state -> (B, C, H, W) grid."""
    if hidden.dim() == 4:  # conv nets: already (B, C, H, W)
        return hidden
    b, t, c = hidden.shape
    side = round((t - 1) ** 0.5)
    if side * side == t - 1:  # ViT with a class token
        hidden = hidden[:, 1:]
    else:
        side = round(t**0.5)
        if side * side != t:
            raise ConfigError(f"cannot read a square grid from {t} encoder tokens")
    return hidden.transpose(1, 2).reshape(b, c, side, side)


@torch.no_grad()
def encode_images(model, processor, images: list[Image.Image], pool: int | None) -> torch.Tensor:
    """(B, pool * pool, C) grid features of ``images`` (the encoder's grid when ``pool`` is None)."""
    device = next(model.parameters()).device
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
    grid = grid_of(model(pixel_values=pixels).last_hidden_state)  # (B, C, H, W)
    if pool is not None and pool != grid.shape[-1]:
        grid = torch.nn.functional.adaptive_max_pool2d(grid, pool)
    return grid.flatten(2).transpose(1, 2).float().cpu()  # (B, H*W, C)


def extract_features(
    images: str | Path,
    output: str | Path,
    *,
    encoder: str = DEFAULT_ENCODER,
    pool: int | None = 6,
    batch_size: int = 32,
    device: str = "cpu",
    progress=None,
) -> int:
    """Write the grid features of every image in ``images`` to the HDF5 file ``output``; returns the count.

    The file appears only when complete (written beside it, then renamed).
    """
    files = image_files(images)
    if pool is not None and pool < 1:
        raise ConfigError(f"pool must be positive, got {pool}")
    h5py = import_optional("h5py", EXTRA, "writing image features")
    import_optional("PIL.Image", EXTRA, "reading images")  # before the encoder: a missing pillow fails fast
    model, processor = load_encoder(encoder, device)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with h5py.File(partial, "w") as f:
            f.attrs["encoder"], f.attrs["pool"] = encoder, pool or 0
            for start in range(0, len(files), batch_size):
                chunk = files[start : start + batch_size]
                pictures = [_open(p) for p in chunk]
                feats = encode_images(model, processor, pictures, pool)  # (b, N, C)
                side = round(feats.shape[1] ** 0.5)
                for path, picture, feat in zip(chunk, pictures, feats, strict=True):
                    w, h = picture.size
                    group = f.create_group(path.stem)
                    group["features"] = feat.numpy().astype(np.float32)
                    group["boxes"] = (grid_boxes(side, side) * torch.tensor([w, h, w, h])).numpy()
                    group["img_h"], group["img_w"] = h, w
                if progress is not None:
                    progress(len(chunk))
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("wrote %d images' features to %s", len(files), output)
    return len(files)


def _open(path: Path) -> Image.Image:
    pil = import_optional("PIL.Image", EXTRA, "reading images")
    try:
        with pil.open(path) as img:
            return img.convert("RGB")
    except (OSError, pil.UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


class FeatureStore:
    """Read features of a VL-T5 / VL-Adapter / ``laddertune features`` HDF5 file by image id.

    ``store[img_id]`` -> (features (N, F) float32 tensor, boxes (N, 4) normalised to [0, 1]).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        h5py = import_optional("h5py", EXTRA, "reading image features")
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, ValueError) as e:
            raise DataError(f"cannot open feature file {self.path}: {str(e).splitlines()[0]}") from None

    def __contains__(self, img_id: str) -> bool:
        return f"{img_id}/features" in self._file

    def __len__(self) -> int:
        return len(self._file)

    def ids(self) -> Iterator[str]:
        return iter(self._file.keys())

    def shape(self, img_id: str) -> tuple[int, int]:
        """(regions N, feature size F) of one image, read from the file's metadata (no features loaded)."""
        if img_id not in self:
            raise DataError(f"image {img_id!r} is not in {self.path}")
        shape = self._file[img_id]["features"].shape
        if len(shape) != 2:
            raise DataError(
                f"{self.path}: {img_id}/features has shape {shape}, expected (regions, feature size)"
            )
        return int(shape[0]), int(shape[1])

    def __getitem__(self, img_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        if img_id not in self:
            raise DataError(f"image {img_id!r} is not in {self.path}")
        group = self._file[img_id]
        feats = torch.from_numpy(np.asarray(group["features"], dtype=np.float32))
        if "boxes" not in group:
            side = round(feats.shape[0] ** 0.5)
            if side * side != feats.shape[0]:
                raise DataError(f"{self.path}: {img_id} has {feats.shape[0]} regions and no boxes")
            return feats, grid_boxes(side, side)
        boxes = torch.from_numpy(np.asarray(group["boxes"], dtype=np.float32))
        w, h = float(np.asarray(group["img_w"])), float(np.asarray(group["img_h"]))
        boxes = (boxes / torch.tensor([w, h, w, h])).clamp(0, 1)  # VL-T5 normalises pixel boxes the same way
        return feats, boxes

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
