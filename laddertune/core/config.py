"""`LadderConfig`: the side network's hyper-parameters, validated at construction, saved as ladder_config.json."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..io import load_json, save_json

CONFIG_NAME = "ladder_config.json"
INITS = ("random", "magnitude", "fisher")
CHAINS = ("residual", "authors")
BACKBONE_DTYPES = ("float32", "bfloat16", "float16", "int8", "nf4")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# What final_shortcut=None means per task head (see docs/first_steps.md for the evidence).
FINAL_SHORTCUT_DEFAULT = {"sequence_classification": True, "seq2seq_lm": False, "causal_lm": False}
HEADS = ("seq2seq_lm", "causal_lm", "sequence_classification")


@dataclass(frozen=True)
class Variant:
    """How one side-network method is wired: what the model asks instead of comparing method names."""

    ladders: bool
    """Side layers read the backbone's layer outputs through gated ladders (else only the embedding output)."""
    runs_backbone: bool
    """The backbone's layers run at all; False: after the pruned initialisation only its embeddings are kept."""
    final_shortcut: bool | None
    """The head's final shortcut, fixed by the method, or None: the head's default (FINAL_SHORTCUT_DEFAULT)."""
    heads: tuple[str, ...]
    """The task heads the method supports."""


# LST and the paper's Figure 8 ablations: Side-Tuning (Zhang et al. 2020: no ladders, one late shortcut) and the
# pruned side network alone (no ladders, no backbone layers at run time; needs a pruned init).
VARIANTS = {
    "lst": Variant(ladders=True, runs_backbone=True, final_shortcut=None, heads=HEADS),
    "side-tuning": Variant(
        ladders=False, runs_backbone=True, final_shortcut=True, heads=("sequence_classification",)
    ),
    "pruned": Variant(
        ladders=False, runs_backbone=False, final_shortcut=False, heads=("sequence_classification",)
    ),
}
LADDER_METHODS = tuple(VARIANTS)


@dataclass
class LadderConfig:
    """Configuration of a ladder side network (Sung et al., 2022, Section 3).

    Attributes:
        reduction_factor: r. The side network is 1/r as wide as the backbone: hidden size d/r, feed-forward size
            d_ff/r, per-head size d_head/r, with the same number of heads. Must divide the backbone's head size.
        side_layers: backbone layer ids (0-based) that get a side layer; ``None`` keeps all. The same list applies to
            every stack (encoder and decoder of T5). A dropped layer's backbone output is unused (Section 3.4).
        gate_temperature: T in the gate mu_i = sigmoid(alpha_i / T).
        gate_init: initial alpha_i (0 gives mu = 0.5).
        init: how side weights start: ``"random"``, or pruned from the backbone by ``"magnitude"`` or
            ``"fisher"`` importance (Section 3.3; Fisher needs calibration data).
        pruning_chain: ``"residual"`` keeps one set of hidden dims for the whole residual stream; ``"authors"``
            chooses each matrix's outputs independently, as the authors' code did.
        fisher_samples: number of training examples for the empirical Fisher information.
        backbone_dropout: False runs the frozen backbone in eval mode (deterministic ladder inputs, cheaper); True
            runs it in train mode whenever the side network trains, reproducing the authors' noisy ladder inputs.
        backbone_dtype: ``None`` leaves the backbone as given; ``float32``, ``bfloat16``, ``float16`` cast the frozen
            backbone (after any pruned init has read it), ``int8`` / ``nf4`` quantize its linear layers
            (:mod:`laddertune.core.quantization`). The side network stays float32 (master weights); the taps are
            cast to the side's compute dtype before the down-projections.
        attn_implementation: the side trunk's attention kernel, ``sdpa`` (default: no (B, H, T, T) probabilities
            kept for the backward where the kernel allows) or ``eager``. T5 has only an eager kernel.
        loss_chunk_size: LM heads: compute the training loss this many positions at a time
            (:mod:`laddertune.core.chunked_loss`), so the full float32 logits and their gradient never exist at
            once; the output then has ``logits=None``. ``None``: the plain loss (and logits). Only when gradients
            are on: evaluation and generation always get logits.
        final_shortcut: classification heads: the head reads the backbone's own final hidden state plus the
            up-projected side output (the up-projection starts at zero), instead of the side output alone (the
            authors' LST). ``None`` (default) resolves to the head's default when the model is built
            (:data:`FINAL_SHORTCUT_DEFAULT`); saved resolved. Checkpoints written before the field existed load as
            ``False``, the setting they trained with.
        method: ``"lst"`` (ladders from every kept layer); ``"side-tuning"`` (Zhang et al. 2020, the paper's
            Figure 8 ablation: no ladders, the side network reads only the down-projected embedding output, and the
            final shortcut fuses the backbone's final state with the side's before the head; classification heads);
            ``"pruned"`` (the side network alone, pruned from the backbone by ``init`` magnitude or fisher: no
            ladders, no shortcut, and after initialisation the backbone's layers are removed: only its embeddings
            run, :mod:`laddertune.core.ablations`).
        side_checkpointing: activation checkpointing of the side layers (``torch.utils.checkpoint``): each side
            layer keeps only its input and its tap for the backward and recomputes the rest, trading about one
            more side forward per step for the side's activation memory. Same losses and gradients.
        side_attention_dropout: the side trunk's dropout on attention probabilities; ``None`` (default) keeps the
            backbone config's (MiniLM and BERT 0.1, Llama 0.0). 0 halves a tap-cached MiniLM step on CPU
            (``benchmarks/results/side_step_profile.md``). Families whose config has no attention-only dropout
            (T5's ``dropout_rate`` covers every dropout) refuse a value.
        side_attention_heads: the side trunk's number of attention heads; ``None`` (default) keeps the backbone's,
            each d_head/r wide, as the authors do (MiniLM at r=8: 12 heads of size 4). Fewer, wider heads cut the
            side step's attention cost (``benchmarks/results/tap_cache_minilm_heads3*.md``); the weight shapes do
            not change, so pruning initialisation works as before. Must divide the side width; families that fix
            the head size in a config field (T5's ``d_kv``, Llama's ``head_dim``) or group key/value heads
            refuse a value.
        backbone_name: filled in by ``save_pretrained``: the backbone's name or path.
        backbone_revision: filled in by ``save_pretrained``: the backbone's commit hash, when known.
        backbone_fingerprint: filled in by ``save_pretrained``: a dtype-free hash of the backbone's config and
            parameter names (:mod:`laddertune.core.fingerprint`).
        backbone_signature: filled in by ``save_pretrained``: a few values of each unquantized backbone parameter,
            compared within a tolerance on loading (the same backbone in any dtype passes, another one fails).
        task_head: filled in by ``get_ladder_model``: ``seq2seq_lm``, ``causal_lm`` or ``sequence_classification``.
            Set it to ``sequence_classification`` to give a bare base model (``BartModel``, ``BertModel``) a new
            classification head (:mod:`laddertune.core.task_model`).
        label_names: filled in by ``save_pretrained`` for classification heads: the backbone's ``id2label`` in id
            order; ``from_pretrained`` restores it, so a checkpoint names its classes without ``results.json``.
        problem_type: filled in by ``save_pretrained`` for classification heads: the backbone config's
            ``problem_type`` (``single_label_classification``, ``regression``), restored by ``from_pretrained``.
    """

    reduction_factor: int = 8
    side_layers: list[int] | None = None
    gate_temperature: float = 0.1
    gate_init: float = 0.0
    init: str = "random"
    pruning_chain: str = "residual"
    fisher_samples: int = 1024
    backbone_dropout: bool = False
    backbone_dtype: str | None = None
    attn_implementation: str = "sdpa"
    loss_chunk_size: int | None = None
    final_shortcut: bool | None = None
    method: str = "lst"
    side_checkpointing: bool = False
    side_attention_dropout: float | None = None
    side_attention_heads: int | None = None
    backbone_name: str | None = None
    backbone_revision: str | None = None
    backbone_fingerprint: str | None = None
    backbone_signature: dict[str, list[float]] | None = None
    task_head: str | None = field(default=None)
    label_names: list[str] | None = None
    problem_type: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reduction_factor, bool) or not isinstance(self.reduction_factor, int):
            raise ConfigError(f"reduction_factor must be an integer, got {self.reduction_factor!r}")
        if self.reduction_factor < 1:
            raise ConfigError(f"reduction_factor must be >= 1, got {self.reduction_factor}")
        if self.side_layers is not None:
            if isinstance(self.side_layers, str | bytes | dict) or not isinstance(self.side_layers, Iterable):
                raise ConfigError(
                    f"side_layers must be a list of layer ids or None, got {self.side_layers!r}"
                )
            layers = list(self.side_layers)
            if not layers:
                raise ConfigError("side_layers must name at least one layer (or be None for all layers)")
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
                raise ConfigError(f"side_layers must be non-negative integers, got {self.side_layers!r}")
            if len(set(layers)) != len(layers):
                raise ConfigError(f"side_layers has duplicates: {self.side_layers!r}")
            self.side_layers = sorted(layers)
        if not isinstance(self.gate_temperature, int | float) or not self.gate_temperature > 0:
            raise ConfigError(f"gate_temperature must be > 0, got {self.gate_temperature!r}")
        if not isinstance(self.gate_init, int | float) or self.gate_init != self.gate_init:
            raise ConfigError(f"gate_init must be a number, got {self.gate_init!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}; got {self.init!r}")
        if self.pruning_chain not in CHAINS:
            raise ConfigError(f"pruning_chain must be one of {', '.join(CHAINS)}; got {self.pruning_chain!r}")
        if (
            isinstance(self.fisher_samples, bool)
            or not isinstance(self.fisher_samples, int)
            or self.fisher_samples < 1
        ):
            raise ConfigError(f"fisher_samples must be a positive integer, got {self.fisher_samples!r}")
        for name in ("backbone_dropout", "side_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.side_attention_dropout is not None and (
            isinstance(self.side_attention_dropout, bool)
            or not isinstance(self.side_attention_dropout, int | float)
            or not 0 <= self.side_attention_dropout < 1
        ):
            raise ConfigError(
                f"side_attention_dropout must be in [0, 1) or None, got {self.side_attention_dropout!r}"
            )
        if self.backbone_dtype is not None and self.backbone_dtype not in BACKBONE_DTYPES:
            raise ConfigError(
                f"backbone_dtype must be one of {', '.join(BACKBONE_DTYPES)} (or None); got {self.backbone_dtype!r}"
            )
        for name in ("side_attention_heads", "loss_chunk_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if self.final_shortcut is not None and not isinstance(self.final_shortcut, bool):
            raise ConfigError(f"final_shortcut must be true, false or None, got {self.final_shortcut!r}")
        if self.method not in VARIANTS:
            raise ConfigError(f"method must be one of {', '.join(VARIANTS)}; got {self.method!r}")
        fixed = self.variant.final_shortcut
        if fixed is not None and self.final_shortcut not in (None, fixed):
            why = (
                "the final shortcut is its one fusion point"
                if fixed
                else "it runs without the backbone's layers"
            )
            raise ConfigError(f"method {self.method!r} fixes final_shortcut={fixed}: {why}")
        if not self.variant.runs_backbone and self.init == "random":
            raise ConfigError(
                f"method {self.method!r} starts from the pruned backbone: init must be magnitude or fisher"
            )
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}; "
                f"got {self.attn_implementation!r}"
            )
        if self.backbone_signature is not None and not _is_signature(self.backbone_signature):
            raise ConfigError("backbone_signature must map parameter names to lists of numbers")
        if self.label_names is not None and (
            isinstance(self.label_names, str | bytes | dict)
            or not isinstance(self.label_names, Iterable)
            or not all(isinstance(n, str) for n in self.label_names)
        ):
            raise ConfigError(f"label_names must be a list of strings or None, got {self.label_names!r}")
        if self.label_names is not None:
            self.label_names = list(self.label_names)
        for name in (
            "backbone_name",
            "backbone_revision",
            "backbone_fingerprint",
            "task_head",
            "problem_type",
        ):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string or None, got {getattr(self, name)!r}")

    def resolve_for_head(self, head: str) -> None:
        """Fill in ``task_head`` and the head-dependent defaults (``final_shortcut``); refuse what the head cannot
        take (a one-line :class:`ConfigError`)."""
        self.task_head = head
        if self.final_shortcut is None:
            fixed = self.variant.final_shortcut
            self.final_shortcut = FINAL_SHORTCUT_DEFAULT[head] if fixed is None else fixed
        if head not in self.variant.heads:
            raise ConfigError(
                f"method {self.method!r} supports {', '.join(self.variant.heads)} heads only, not {head}"
            )
        if self.final_shortcut and head != "sequence_classification":
            raise ConfigError("final_shortcut applies to classification heads only")

    @property
    def variant(self) -> Variant:
        """How this config's method wires the side network (:data:`VARIANTS`)."""
        return VARIANTS[self.method]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LadderConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a ladder config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ladder config field(s): {', '.join(map(repr, unknown))}")
        # a file written before final_shortcut existed trained without it (the authors' head)
        return cls(**{"final_shortcut": False, **data})

    def save(self, directory: str | Path) -> Path:
        """Write ``ladder_config.json`` into ``directory`` (atomically) and return its path."""
        return save_json(Path(directory) / CONFIG_NAME, self.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> LadderConfig:
        return cls.from_dict(load_json(Path(directory) / CONFIG_NAME))


def _is_signature(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str)
        and isinstance(v, list)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        for k, v in value.items()
    )
