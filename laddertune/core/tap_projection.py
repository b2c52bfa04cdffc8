"""Taps that cost d/r, not d: a frozen projection of each tap applied while the backbone runs.

The ladder's down-projection Down_i (d -> d/r, trainable) is factored as ``A_i P_i``: ``P_i`` (k x d) is frozen and
applied inside the backbone's forward, in the tap hook (:func:`~laddertune.core.side_network.record_taps`), so the
full-width hidden state of layer i is a transient of the backbone's forward and what is kept for the side network
(and written to a tap cache) is ``P_i b_i``, k wide (k = d/r by default); ``A_i`` (k -> d/r) is the side stack's
trainable ``downs[i]``. With ``P_i`` the identity this is the paper's Down exactly (tests/test_tap_projection.py).

``P_i`` (``LadderConfig.tap_projection``):

- ``pca``: the top-k principal directions of tap i (its covariance over calibration tokens, real tokens only),
  one matrix per tap, fitted by :func:`fit_pca` before training. What the side can read of a layer is the
  k-dimensional subspace where that layer's states vary most.
- ``random``: one random orthogonal k x d matrix (a fixed seed, so every run and every tap cache entry agrees),
  shared by all taps: a Johnson-Lindenstrauss sketch that needs no data.

The final shortcut reads the backbone's final state at full width (the LM head and the classifier take d): in the
live forward that is the backbone's own output, one (B, T, d) tensor; in a taps-only pass (a tap cache) it is
recorded under the key :data:`FINAL`.
"""

from __future__ import annotations

import hashlib
import logging

import torch
from torch import nn

from ..errors import ConfigError

logger = logging.getLogger(__name__)

RANDOM_SEED = 0  # the random projection's: fixed, so that runs of any seed share one tap cache entry
# Key of the backbone's last layer output at full width among the taps (the final shortcut's input when the
# backbone's own output is not kept); EMBED (-1) is the embedding output's.
FINAL = -2


def random_basis(rank: int, width: int) -> torch.Tensor:
    """(rank, width) with orthonormal rows (rank <= width), the same for every call: QR of a seeded Gaussian."""
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    gaussian = torch.randn(width, rank, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)  # (width, rank), orthonormal columns
    return q.T.float().contiguous()


class TapProjection(nn.Module):
    """The frozen P of one side stack: ``forward(x, key)`` maps a tap (..., d) to (..., k).

    A module (not a function) so that its basis travels with the side network's state dict (a checkpoint keeps the
    fitted PCA) and the memory predictor can hook its outputs (the taps as they are kept).

    Args:
        keys: the tap keys it projects (EMBED and the kept layers), in order.
        width: d, the backbone's width.
        rank: k.
        kind: ``pca`` (one basis per key) or ``random`` (one shared basis).
    """

    def __init__(self, keys: list[int], width: int, rank: int, kind: str) -> None:
        super().__init__()
        if rank > width:
            raise ConfigError(f"tap_rank {rank} is wider than the backbone ({width})")
        self.kind, self.rank, self.width = kind, rank, width
        shared = kind == "random"
        self.index = {k: 0 if shared else i for i, k in enumerate(keys)}
        basis = random_basis(rank, width)[None] if shared else torch.zeros(len(keys), rank, width)
        self.register_buffer("basis", basis)  # (1 or taps, k, d)

    def forward(self, x: torch.Tensor, key: int) -> torch.Tensor:
        p = self.basis[self.index[key]]  # (k, d)
        return nn.functional.linear(x, p.to(x.device, x.dtype))  # (..., k)

    def fingerprint(self) -> str:
        """A hash of the basis values: a tap cache entry holds taps of one projection only."""
        data = self.basis.detach().float().cpu().contiguous()
        return hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]


def projection_fingerprint(model) -> str | None:
    """The hash of every side stack's projection (None when the taps are full width)."""
    parts = [
        f"{name}:{stack.projection.kind}:{stack.projection.fingerprint()}"
        for name, stack in model.side.stacks.items()
        if stack.projection is not None
    ]
    return "|".join(parts) or None


def match_backbone_dtype(model) -> None:
    """Store each basis in the dtype of the taps it projects (a 16-bit backbone's: half the memory), the dtype of
    the backbone's unquantized weights; a float32 backbone keeps float32."""
    floats = (p.dtype for p in model.backbone.parameters() if p.is_floating_point())
    dtype = next(floats, None)  # quantized weights aside: norms, embeddings, as the hidden states are
    if dtype is None:
        return
    for stack in model.side.stacks.values():
        if stack.projection is not None:
            stack.projection.basis.data = stack.projection.basis.data.to(dtype)


@torch.no_grad()
def fit_pca(model, batches, tokens: int) -> int:
    """Fit every ``pca`` projection of ``model`` to its taps over the real tokens of ``batches``.

    Accumulates each tap's sum and Gram matrix (each batch's in float32 where the taps are, summed in float64 on the
    CPU) over batches until ``tokens`` real tokens (per stack) are seen, then keeps the top-k eigenvectors of the covariance as the rows of ``P_i``.

    Args:
        model: a LadderModel whose side stacks have ``pca`` projections (unfitted).
        batches: an iterable of collated batches (labels for encoder-decoders: the decoder's taps follow from them).
        tokens: how many real tokens to read.

    Returns:
        The number of tokens read (per stack, at most ``tokens`` rounded up to a batch).

    Raises:
        ConfigError: no batch had a real token.
    """
    stacks = {n: s for n, s in model.side.stacks.items() if s.projection is not None}
    stats: dict[str, dict[int, list]] = {n: {} for n in stacks}
    seen = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k in _INPUTS}
            taps = model.backbone_taps(**inputs, raw=True)
            for name, stack in stacks.items():
                mask = _mask(batch, name).to(taps[name][-1].device)
                for key in stack.projection.index:
                    x = taps[name][key][mask].float()  # (n, d), on the backbone's device
                    s = stats[name].setdefault(key, [0, 0.0, 0.0])
                    s[0] += x.shape[0]
                    s[1] = s[1] + x.sum(0).double().cpu()
                    s[2] = s[2] + (x.T @ x).double().cpu()  # the matmul where the taps are; sums in float64
            seen += int(_mask(batch, next(iter(stacks))).sum())
            if seen >= tokens:
                break
    finally:
        model.train(was_training)
    if not seen:
        raise ConfigError("tap_projection pca: the calibration data has no tokens")
    for name, stack in stacks.items():
        proj = stack.projection
        for key, i in proj.index.items():
            n, total, gram = stats[name][key]
            mean = total / n
            cov = gram / n - torch.outer(mean, mean)  # (d, d)
            _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
            top = vectors[:, -proj.rank :].flip(-1).T  # (k, d), largest first
            proj.basis[i] = top.to(proj.basis.dtype)
    logger.info("tap projection: PCA of %d calibration tokens per tap", seen)
    return seen


_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "labels")


def _mask(batch: dict, stack: str) -> torch.Tensor:
    """(B, T) bool: the real tokens of a stack (the decoder's: the labelled target positions)."""
    if stack == "decoder":
        return batch["labels"] != -100
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()
