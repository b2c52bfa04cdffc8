"""The training methods by name: what each one is (its options class, a one-line summary, what it can do) and where
its implementation lives, imported on first use.

This module imports no torch: the command line builds its flags and checks a run's configuration from it in a
fraction of a second. :func:`get_method` returns the method object (:class:`~laddertune.methods.base.TrainingMethod`)
that builds, saves, loads and is measured; the training loop, checkpoints, results and the memory predictor ask it
and never compare method names. Adding a method: its options dataclass, a :class:`TrainingMethod` subclass, and one
:func:`register` call here.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from ..baselines.options import (
    AdapterOptions,
    BitFitOptions,
    FullOptions,
    LoraOptions,
    PromptOptions,
    QLoraOptions,
)
from ..core.config import LadderConfig
from ..errors import ConfigError
from ..fields import option_name, options_of

# LST on BART-large's encoder (Table 2): the paper's per-task learning rates.
BART_LST_LR = {"cola": 1e-3, "mrpc": 3e-3, "qnli": 1e-3, "rte": 3e-3, "sst2": 3e-3, "mnli": 3e-4, "qqp": 3e-4}


@dataclass(frozen=True)
class MethodSpec:
    """One training method as the registry knows it."""

    name: str
    """The method's name (``--method``)."""
    options: type
    """Its options dataclass; an option of another method cannot be written in it."""
    summary: str
    """One line for ``--help``."""
    implementation: str
    """``module:Class`` of its :class:`~laddertune.methods.base.TrainingMethod`, imported on first use."""
    default_lr: float
    """The paper's learning rate for the method (3e-3 LST, 0.3 prompt tuning, 3e-4 the rest)."""
    side_network: bool = False
    """It trains a ladder side network next to a frozen backbone (a LadderModel): side-only checkpoints, and the
    backbone can be placed over several devices (``device_map``)."""
    reads_taps: bool = False
    """Its side network reads the backbone's layer taps: a tap cache can store them and several side networks can
    share one backbone pass (not the pruned side network, whose backbone is stripped to its embeddings)."""
    backbone_storage: str | None = None
    """The storage the method fixes for its (frozen) backbone: ``nf4`` for QLoRA, which loads it in 16 bits and
    quantizes it; None: a side network's options say (``backbone_dtype``), a baseline trains it in float."""
    task_lr: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per backbone ``model_type``, the paper's per-task learning rates where it gave them."""

    def option_names(self) -> dict[str, str]:
        """Option name (the flag's, e.g. ``attn``) -> field name of :attr:`options` (``attn_implementation``)."""
        return {option_name(f): f.name for f in options_of(self.options)}

    def make_options(self, values: dict | None = None, base=None):
        """The method's options from ``values`` (option names -> values) over ``base`` (default: the defaults);
        a name that is not an option of this method is a one-line ConfigError."""
        names = self.option_names()
        unknown = sorted(set(values or {}) - set(names))
        if unknown:
            owners = [m for m in _REGISTRY if unknown[0] in _REGISTRY[m].option_names()]
            whose = f"an option of method {', '.join(owners)}" if owners else "not an option of any method"
            raise ConfigError(f"{unknown[0]} is {whose}, not of method {self.name}")
        fields = {names[k]: v for k, v in (values or {}).items()}
        if base is not None:
            return dataclasses.replace(base, **fields)
        if "method" in {f.name for f in dataclasses.fields(self.options)}:
            fields["method"] = self.name  # LadderConfig serves lst and its ablations: the name is the method
        return self.options(**fields)


_REGISTRY: dict[str, MethodSpec] = {}
_LOADED: dict[str, object] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry (its name must be new)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a method named {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def method_names() -> tuple[str, ...]:
    """Every registered method, in registration order (LST first, then its ablations, then the baselines)."""
    return tuple(_REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The registry entry of method ``name``; an unknown name is a one-line ConfigError listing the methods."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def get_method(name: str):
    """The method object of ``name`` (a :class:`~laddertune.methods.base.TrainingMethod`), imported once."""
    spec = method_spec(name)
    if name not in _LOADED:
        module, _, cls = spec.implementation.partition(":")
        _LOADED[name] = getattr(importlib.import_module(module, __package__), cls)(spec)
    return _LOADED[name]


for _spec in (
    MethodSpec(
        "lst",
        LadderConfig,
        "Ladder Side-Tuning: a side network 1/r as wide reads the frozen backbone's layers through gated ladders",
        ".ladder:LadderMethod",
        3e-3,
        side_network=True,
        reads_taps=True,
        task_lr={"bart": BART_LST_LR, "mbart": BART_LST_LR},
    ),
    MethodSpec(
        "side-tuning",
        LadderConfig,
        "Side-Tuning (the paper's Figure 8): no ladders; the side network reads the embedding output, one late "
        "shortcut adds the backbone's final state",
        ".ladder:LadderMethod",
        3e-3,
        side_network=True,
        reads_taps=True,
    ),
    MethodSpec(
        "pruned",
        LadderConfig,
        "the pruned side network alone (the paper's Figure 8): no ladders, only the backbone's embeddings run; "
        "needs init magnitude or fisher",
        ".ladder:LadderMethod",
        3e-3,
        side_network=True,
    ),
    MethodSpec("full", FullOptions, "full fine-tuning", ".baselines:BaselineMethod", 3e-4),
    MethodSpec(
        "lora", LoraOptions, "LoRA (PEFT) on the attention projections", ".baselines:BaselineMethod", 3e-4
    ),
    MethodSpec(
        "adapter",
        AdapterOptions,
        "bottleneck adapters after each sub-layer",
        ".baselines:BaselineMethod",
        3e-4,
    ),
    MethodSpec("bitfit", BitFitOptions, "BitFit: the biases alone", ".baselines:BaselineMethod", 3e-4),
    MethodSpec(
        "prompt", PromptOptions, "prompt tuning (PEFT), 100 soft prompts", ".baselines:BaselineMethod", 0.3
    ),
    MethodSpec(
        "qlora",
        QLoraOptions,
        "QLoRA: LoRA r=16 on every linear of an nf4 backbone (CUDA and bitsandbytes)",
        ".qlora:QLoraMethod",
        3e-4,
        backbone_storage="nf4",
    ),
):
    register(_spec)
