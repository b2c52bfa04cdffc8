"""Packages whose public names load on first use, so that ``import laddertune`` and ``laddertune --help`` do not
import torch and transformers (seconds) until something needs them.

The pattern of transformers' own ``_LazyModule`` in a few lines: a package's ``__init__`` lists each public name
and the submodule that defines it, and module-level ``__getattr__`` (PEP 562) imports that submodule on the first
access. ``from laddertune import LadderModel`` works as before; only the import happens later.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for ``package``, whose public names are ``exports``: name -> relative submodule
    (``".model"``). A name is imported once and then kept in the package's namespace."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
