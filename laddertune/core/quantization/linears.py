"""The ``nn.Linear`` layers a quantization backend replaces (shared by :mod:`.bnb` and :mod:`.torchao_cpu`)."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn


def linear_children(module: nn.Module, skip: set[int]) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute name, layer) for every plain ``nn.Linear`` below ``module`` whose id is not in ``skip``."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and id(child) not in skip:
                yield parent, name, child
