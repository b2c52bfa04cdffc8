"""A batch's tap as the rows of its stored positions only: the form a tap cache hands taps over in.

A tap cache (:mod:`laddertune.taps`) stores each example's taps without padding. Padded back into a (B, T, d)
batch, the padding is zeros that a ladder's ``Down_i`` (a per-token linear map) projects to outputs no loss reads:
attention masks those positions out, pooling and the losses skip them. In the MRPC batch of
``benchmarks/side_step_profile.py`` 32% of the positions are padding, and the taps are the widest tensors of a cached
step. So the side network runs each ``Down_i`` on the rows alone (N, d) and :meth:`PackedTap.unpack` places its
(N, d/r) output into the batch; a reader that needs every position (the final shortcut's state) takes
:meth:`PackedTap.padded`. That side step took 0.93x the padded one (``benchmarks/results/side_step_profile.md``).
"""

from __future__ import annotations

import torch


class PackedTap:
    """One tap of a batch as its stored positions' rows.

    Args:
        rows: (N, width), the rows of the positions where ``mask`` is True, in row-major order (example by example,
            each in position order).
        mask: (B, T) bool, the batch's stored positions.
        index: the flat positions ``b * T + t`` of the rows (computed from ``mask`` when not given; the taps of one
            stack share one).
    """

    def __init__(self, rows: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> None:
        if index is None:
            index = mask.flatten().nonzero().squeeze(1)
        if rows.dim() != 2 or rows.shape[0] != index.numel():
            raise ValueError(
                f"a packed tap needs one row per stored position: {index.numel()}, got {rows.shape}"
            )
        self.rows, self.mask, self.index = rows, mask, index

    def to(self, *args, **kwargs) -> PackedTap:
        """The rows through ``Tensor.to(*args, **kwargs)`` (a dtype, a device), the positions to the same device."""
        rows = self.rows.to(*args, **kwargs)
        if rows is self.rows:
            return self
        blocking = {"non_blocking": kwargs.get("non_blocking", False)}
        return PackedTap(rows, self.mask.to(rows.device, **blocking), self.index.to(rows.device, **blocking))

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """Per-row ``values`` (N, k) at their positions of a (B, T, k) batch, zeros elsewhere; differentiable in
        ``values``."""
        batch, length = self.mask.shape
        out = values.new_zeros(batch * length, values.shape[-1])
        return out.index_copy_(0, self.index, values).view(batch, length, -1)

    def padded(self) -> torch.Tensor:
        """The tap as a (B, T, width) tensor, zeros at the positions not stored."""
        return self.unpack(self.rows)


def per_token(fn, tap: torch.Tensor | PackedTap) -> torch.Tensor:
    """``fn`` (a per-token map, such as a ``Linear``) on a tap: on a packed tap's rows only, its output placed into
    the batch; on a (B, T, width) tensor, as it is."""
    if isinstance(tap, PackedTap):
        return tap.unpack(fn(tap.rows))
    return fn(tap)


def padded(tap: torch.Tensor | PackedTap) -> torch.Tensor:
    """A tap as a (B, T, width) tensor."""
    return tap.padded() if isinstance(tap, PackedTap) else tap
