"""Many side networks on one frozen backbone: the backbone runs once per batch, every side network on its taps.

PEFT's multi-adapter vocabulary: :meth:`MultiSideModel.add_side` (a new side network), :meth:`load_side` (a saved
one; a checkpoint made for another backbone is refused by its fingerprint), :meth:`set_side` (which one ``forward``
runs) and :meth:`forward_all` (all of them on one backbone pass). Each named side is a :class:`LadderModel` holding the
SAME backbone module, so the backbone's weights are in memory once.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .config import LadderConfig
from .model import LadderModel, get_ladder_model


class MultiSideModel(nn.Module):
    """A frozen backbone with named ladder side networks.

    Args:
        backbone: the transformers model every side network was (or will be) trained on.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.sides = nn.ModuleDict()
        self.active: str | None = None

    def _put(self, name: str, model: LadderModel) -> LadderModel:
        if name in self.sides:
            raise ConfigError(f"a side network named {name!r} is already loaded")
        if self.sides and model.head != next(iter(self.sides.values())).head:
            raise ConfigError(
                f"side {name!r} has head {model.head}; the others have another: one head per model"
            )
        self.sides[name] = model.eval()
        self.active = self.active or name
        return model

    def add_side(self, name: str, config: LadderConfig | None = None) -> LadderModel:
        """A new (untrained) side network next to the shared backbone."""
        return self._put(name, get_ladder_model(self.backbone, config))

    def load_side(self, name: str, directory) -> LadderModel:
        """A saved side network (``save_pretrained`` folder); refused when it was trained on another backbone."""
        return self._put(name, LadderModel.from_pretrained(self.backbone, directory))

    def set_side(self, name: str) -> None:
        """Make ``name`` the side network that :meth:`forward` runs."""
        if name not in self.sides:
            raise ConfigError(f"no side network named {name!r}; loaded: {', '.join(self.sides) or 'none'}")
        self.active = name

    def forward(self, **batch):
        """The active side network's forward (the backbone runs for it alone)."""
        if self.active is None:
            raise ConfigError("no side network loaded: add_side or load_side first")
        return self.sides[self.active](**batch)

    @torch.no_grad()
    def forward_all(self, **batch) -> dict:
        """Every side network on one backbone pass: the taps of the union of their kept layers, then each side.

        Returns:
            ``{name: output}``, each the output that side network alone gives on ``batch``.
        """
        if not self.sides:
            raise ConfigError("no side network loaded: add_side or load_side first")
        models = list(self.sides.values())
        layers = {
            stack: sorted({i for m in models for i in m.side.stacks[stack].tap_layers})
            for stack in models[0].side.stacks
        }
        # full-width taps once; each side network narrows them with its own tap projection (they may differ)
        taps = models[0].backbone_taps(**batch, layers=layers, raw=True)
        return {name: model(**batch, taps=projected(model, taps)) for name, model in self.sides.items()}


def projected(model: LadderModel, taps: dict) -> dict:
    """``taps`` (full width) as ``model``'s side stacks read them: through each stack's tap projection."""
    out = {}
    for name, stack_taps in taps.items():
        projection = model.side.stacks[name].projection
        out[name] = {
            k: v if projection is None or k not in projection.index else projection(v, k)
            for k, v in stack_taps.items()
        }
    return out
