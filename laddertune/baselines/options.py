"""The options of each baseline method, one dataclass per method; each option is declared once, here.

They are what :func:`laddertune.baselines.prepare_baseline` builds a method from and what ``laddertune train``
turns into flags (``--lora-rank``, ``--freeze-layers``...). A method's options class holds only its own options, so
"a LoRA rank for prompt tuning" cannot be written. The defaults are the authors' runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from ..errors import ConfigError
from ..fields import SETTING, check_fields, opt


@dataclass
class _Options:
    """What every method's options share: validation on construction and a JSON round trip."""

    name: ClassVar[str]

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class _FrozenLayers(_Options):
    freeze_layers: int = opt(0, minimum=0, metavar="N")
    """Freeze the first N layers and insert nothing there (the paper's Figure 6; T5: the encoder's layers, then
    the decoder's); LST drops side layers with side_layers instead."""


@dataclass
class FullOptions(_FrozenLayers):
    """Full fine-tuning: every parameter trains."""

    name: ClassVar[str] = "full"


@dataclass
class BitFitOptions(_FrozenLayers):
    """BitFit: only the biases train (zero biases are added where the layers have none, as for T5 and Llama)."""

    name: ClassVar[str] = "bitfit"


@dataclass
class AdapterOptions(_FrozenLayers):
    """Houlsby-style bottleneck adapters after each sub-layer, and every layer norm, train."""

    name: ClassVar[str] = "adapter"
    adapter_reduction: int = opt(16, minimum=1, metavar="N")
    """The adapters' bottleneck is hidden_size // N wide (the authors' 16; Figure 5 sweeps it)."""


@dataclass
class _LoraSettings(_Options):
    lora_rank: int = opt(32, minimum=1, metavar="R")
    """The rank of LoRA's update (the authors' 32; Figure 5 sweeps it)."""
    lora_alpha: float = opt(32, positive=True, kind=SETTING)
    """LoRA's scaling numerator: the update is scaled by alpha / rank."""
    lora_dropout: float = opt(0.1, fraction=True, kind=SETTING)
    """Dropout on the LoRA branch's input."""
    lora_targets: tuple[str, ...] | None = opt(None, kind=SETTING)
    """Module names LoRA adapts (name suffixes, PEFT's rule; a string is split on commas); None: the family's
    attention projections (LoRA) or every linear layer (QLoRA's ``all-linear``)."""

    def __post_init__(self) -> None:
        if isinstance(self.lora_targets, str):
            self.lora_targets = tuple(t.strip() for t in self.lora_targets.split(","))
        super().__post_init__()
        if self.lora_targets is not None and not (self.lora_targets and all(self.lora_targets)):
            raise ConfigError(
                f"lora_targets must be a non-empty list of module names, got {self.lora_targets!r}"
            )


@dataclass
class LoraOptions(_LoraSettings, _FrozenLayers):
    """PEFT LoRA on the family's attention projections (T5 ``q``, ``v``; BERT ``query``, ``value``; Llama
    ``q_proj``, ``v_proj``; GPT-2 ``c_attn``)."""

    name: ClassVar[str] = "lora"


@dataclass
class QLoraOptions(_LoraSettings):
    """QLoRA (Dettmers et al. 2023): PEFT LoRA on every linear layer of an nf4 backbone prepared by
    ``prepare_model_for_kbit_training``; bitsandbytes' 4-bit kernels, CUDA only."""

    name: ClassVar[str] = "qlora"
    lora_rank: int = opt(16, minimum=1, metavar="R")
    """The rank of LoRA's update (QLoRA's 16)."""
    lora_dropout: float = opt(0.05, fraction=True, kind=SETTING)
    """Dropout on the LoRA branch's input (QLoRA's 0.05)."""
    gradient_checkpointing: bool = True
    """The backbone's gradient checkpointing, which ``prepare_model_for_kbit_training`` switches on (off: faster,
    more memory)."""


@dataclass
class PromptOptions(_Options):
    """PEFT prompt tuning: soft prompt vectors before the input, initialised from the first vocabulary rows."""

    name: ClassVar[str] = "prompt"
    prompt_length: int = opt(100, minimum=1, kind=SETTING)
    """The number of soft prompt vectors."""


BASELINE_OPTIONS = {
    cls.name: cls for cls in (FullOptions, LoraOptions, AdapterOptions, BitFitOptions, PromptOptions)
}
