"""Trainable visual embeddings of CLIP-T5 (VL-T5 / VL-Adapter, docs/concepts.md#fact-clip-t5): features, boxes, image order.

For each region (or grid cell) of each image: ``norm(Linear(F -> d)(feature)) + norm(Linear(5 -> d)(box)) +
order[image]`` with the box as (x1, y1, x2, y2, area), normalised to [0, 1]. The result is at the backbone's width
d; the side network's own embedding down-projection takes it to d/r, exactly like the text embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class VisualConfig:
    """Shape of the visual input.

    Args:
        feature_dim: F, the size of one region/grid feature (2048 for CLIP RN101 grids).
        max_images: images per example the order embedding knows (2 for NLVR2).
    """

    feature_dim: int = 2048
    max_images: int = 2

    def __post_init__(self) -> None:
        if self.feature_dim < 1 or self.max_images < 1:
            raise ConfigError("VisualConfig: feature_dim and max_images must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


def grid_boxes(rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, 4) normalised (x1, y1, x2, y2) of a row-major grid: the boxes of CLIP grid features."""
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    x1, y1 = xs.flatten() / cols, ys.flatten() / rows
    return torch.stack([x1, y1, x1 + 1 / cols, y1 + 1 / rows], dim=-1).float()


def with_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) normalised boxes -> (..., 5) with the area appended, as VL-T5 feeds its box embedding."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return torch.cat([boxes, area.unsqueeze(-1)], dim=-1)


def as_images(feats: torch.Tensor, boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring features to (B, V, N, F) and boxes to (B, V, N, 4); a square grid's boxes when ``boxes`` is None."""
    if feats.dim() == 3:  # one image per example
        feats = feats.unsqueeze(1)
        boxes = None if boxes is None else boxes.unsqueeze(1)
    if feats.dim() != 4:
        raise ValueError(f"visual features must be (B, N, F) or (B, V, N, F), got {tuple(feats.shape)}")
    b, v, n, _ = feats.shape
    if boxes is None:
        side = round(n**0.5)
        if side * side != n:
            raise ValueError(f"{n} regions are not a square grid: pass their boxes")
        boxes = grid_boxes(side, side).to(feats.device).expand(b, v, n, 4)
    return feats, boxes


class VisualEmbedding(nn.Module):
    """Region/grid features and their boxes -> (B, V * N, d) embeddings, image by image."""

    def __init__(self, config: VisualConfig, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.visual_config = config
        self.feat = nn.Linear(config.feature_dim, d_model)
        self.feat_norm = nn.RMSNorm(d_model, eps=eps)  # T5's LayerNorm is an RMS norm, as VL-T5 uses
        self.box = nn.Linear(5, d_model)
        self.box_norm = nn.RMSNorm(d_model, eps=eps)
        self.order = nn.Embedding(config.max_images, d_model)

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Embed ``feats`` (B, N, F) or (B, V, N, F) with ``boxes`` (same leading shape, 4 normalised coords).

        Returns:
            (B, V * N, d), image 0's regions first.
        """
        feats, boxes = as_images(feats, boxes)
        b, v, n, f = feats.shape
        if v > self.visual_config.max_images or f != self.visual_config.feature_dim:
            raise ValueError(
                f"got {v} images of {f}-d features; this embedding takes at most "
                f"{self.visual_config.max_images} of {self.visual_config.feature_dim}-d"
            )
        dtype = self.feat.weight.dtype
        x = self.feat_norm(self.feat(feats.to(dtype)))  # (B, V, N, d)
        x = x + self.box_norm(self.box(with_area(boxes.to(dtype))))
        order = torch.arange(v, device=feats.device)
        x = x + self.order(order)[None, :, None, :]  # (1, V, 1, d)
        return x.reshape(b, v * n, -1)
