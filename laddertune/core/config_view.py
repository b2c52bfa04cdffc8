"""``LadderModel.config``: the backbone's own config, with a deprecation path for LadderConfig field names.

Until 0.1 ``LadderModel.config`` was the :class:`LadderConfig`; like PEFT, it is now the backbone's
``PretrainedConfig`` (so ``model.config.num_labels`` and transformers' tools work) and the LadderConfig lives at
``LadderModel.ladder_config``. Code that still reads a LadderConfig-only field through ``.config`` (say
``model.config.reduction_factor``) gets the value with a ``FutureWarning`` naming the new place, for one release.

Why a view and not the config itself: the backbone's config is a transformers object we must not modify (adding
attributes to it would be saved with the backbone). The view forwards every read and write to it, and reports its
class (``isinstance(model.config, PretrainedConfig)`` holds), so tools that inspect the config see the real one.
"""

from __future__ import annotations

import dataclasses
import warnings

from .config import LadderConfig

LADDER_ONLY = frozenset(f.name for f in dataclasses.fields(LadderConfig))


class BackboneConfigView:
    """The backbone's config, forwarding LadderConfig-only names (with a warning) to the LadderConfig."""

    __slots__ = ("_backbone_config", "_ladder_config")

    def __init__(self, backbone_config, ladder_config: LadderConfig) -> None:
        object.__setattr__(self, "_backbone_config", backbone_config)
        object.__setattr__(self, "_ladder_config", ladder_config)

    @property
    def __class__(self):  # isinstance() and type checks see the backbone config's class
        return type(object.__getattribute__(self, "_backbone_config"))

    def __getattr__(self, name: str):
        backbone_config = object.__getattribute__(self, "_backbone_config")
        try:
            return getattr(backbone_config, name)
        except AttributeError:
            if name not in LADDER_ONLY:
                raise
        warnings.warn(
            f"LadderModel.config is now the backbone's config; read {name!r} from model.ladder_config",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(object.__getattribute__(self, "_ladder_config"), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(object.__getattribute__(self, "_backbone_config"), name, value)

    def __eq__(self, other) -> bool:
        return object.__getattribute__(self, "_backbone_config") == other

    __hash__ = None

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_backbone_config"))
