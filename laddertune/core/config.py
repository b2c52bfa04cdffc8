"""`LadderConfig`: the side network's hyper-parameters, validated at construction, saved as ladder_config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fields import RECORD, SETTING, check_fields, opt, record
from ..io import load_json, save_json

CONFIG_NAME = "ladder_config.json"
INITS = ("random", "magnitude", "fisher")
CHAINS = ("residual", "authors")
BACKBONE_DTYPES = ("float32", "bfloat16", "float16", "int8", "nf4")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# What final_shortcut=None means per task head (see docs/results/ablations.md#the-final-shortcut for the evidence).
FINAL_SHORTCUT_DEFAULT = {"sequence_classification": True, "seq2seq_lm": True, "causal_lm": True}
HEADS = ("seq2seq_lm", "causal_lm", "sequence_classification")
LM_HEADS = ("seq2seq_lm", "causal_lm")
TAP_PROJECTIONS = ("none", "pca", "random")
# The heads whose taps are projected by default (tap_projection=None): the LM heads, whose long sequences make the
# taps a large share of the peak. Classifiers keep full-width taps: on the MiniLM Table 1 protocol a projection to
# d/r cost 1.4 (pca) and more (random) SST-2 points (benchmarks/results/llm_scale_accuracy_minilm.md).
TAP_PROJECTION_HEADS = ("seq2seq_lm", "causal_lm")
# What side_checkpointing=None and loss_chunk_size=None resolve to per task head: on for the LM heads, whose long
# sequences and large vocabularies set the peak (benchmarks/results/llm_scale_memory.md); off for classifiers,
# whose short inputs gain little memory and would pay one more side forward per step.
SIDE_CHECKPOINTING_DEFAULT = {"sequence_classification": False, "seq2seq_lm": True, "causal_lm": True}
LOSS_CHUNK_DEFAULT = 1024  # the most positions per chunk
LOSS_CHUNK_LOGITS = 2**24  # a chunk's float32 logits at most this many values (64 MiB): 512 positions x 32k
# Layer dropping by default (docs/concepts.md#fact-kept-side-layers): the paper keeps every other side layer of
# T5-large's 24-layer stacks (and 1 of T5-3B's 24) and all of T5-base's 12; on SmolLM2's 30 layers every other
# side layer matched all of them in instruction tuning (benchmarks/results/lst_lm_settings.md), and the MiniLM
# Figure 6 run lost nothing with half of its 6 (benchmarks/results/figure6_minilm/report/figure6.md).
DEEP_STACK = 24
DEEP_STACK_STRIDE = 2


def side_layer_stride_default(num_layers: int) -> int:
    """The default side-layer stride for a backbone whose deepest stack has ``num_layers`` layers: every other
    layer from :data:`DEEP_STACK` layers on, every layer below."""
    return DEEP_STACK_STRIDE if num_layers >= DEEP_STACK else 1


def strided_layers(num_layers: int, stride: int) -> list[int]:
    """Layer ids k-1, 2k-1, ... of ``num_layers`` (the paper's "2nd, 4th, 6th ... layers left" at k=2); the last
    layer alone when k is larger than the stack."""
    return [i for i in range(num_layers) if (i + 1) % stride == 0] or [num_layers - 1]


def loss_chunk_default(vocab_size: int | None) -> int:
    """The default loss chunk of an LM head: the largest power of two of positions whose float32 logits hold at
    most :data:`LOSS_CHUNK_LOGITS` values (Llama-2's 32k vocabulary: 512, Llama-3's 128k: 128), at most
    :data:`LOSS_CHUNK_DEFAULT` and at least 64. A chunk's logits, their softmax and gradient are the transients of
    the loss, so a fixed number of positions would cost four times as much with a four times larger vocabulary."""
    if not vocab_size:
        return LOSS_CHUNK_DEFAULT
    positions = max(64, LOSS_CHUNK_LOGITS // vocab_size)
    return min(LOSS_CHUNK_DEFAULT, 1 << (positions.bit_length() - 1))


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


# What a ladder_config.json written before the tap projection existed meant by a None (then: the backbone's heads,
# no side checkpointing, the plain loss; since then None resolves when the model is built, and files are saved
# resolved).
LEGACY_NONE = {"side_attention_heads": 0, "side_checkpointing": False, "loss_chunk_size": 0}


@dataclass
class LadderConfig:
    """Configuration of a ladder side network (Sung et al., 2022, Section 3), and the options of the methods that
    train one (``lst`` and the paper's Figure 8 ablations ``side-tuning`` and ``pruned``).

    Each field is documented below; :mod:`laddertune.fields` checks it against its declaration.
    """

    reduction_factor: int = opt(8, minimum=1, metavar="R")
    """The side network is 1/r as wide as the backbone (hidden size d/r, feed-forward size d_ff/r, per-head size
    d_head/r, the same number of heads); r must divide the backbone's head size."""
    side_layers: list[int] | None = opt(None, metavar="IDS")
    """Backbone layer ids (0-based, e.g. 1,2,3) that get a side layer; None: those ``side_layer_stride`` picks. The
    same list applies to every stack (encoder and decoder of T5). A dropped layer's backbone output is unused
    (Section 3.4)."""
    side_layer_stride: int | None = opt(None, minimum=1, metavar="K")
    """Without ``side_layers``: a side layer on every k-th backbone layer (ids k-1, 2k-1, ...: the paper's layer
    dropping, Section 3.4); 1 keeps every layer. None picks k when the model is built: 2 where a stack has
    :data:`DEEP_STACK` layers or more, else 1 (:func:`side_layer_stride_default`)."""
    gate_temperature: float = opt(0.1, positive=True, kind=SETTING)
    """T in the gate mu_i = sigmoid(alpha_i / T)."""
    gate_init: float = opt(0.0, kind=SETTING)
    """Initial alpha_i (0 gives mu = 0.5)."""
    init: str = opt("random", choices=INITS)
    """How the side weights start: random, or pruned from the backbone by magnitude or fisher importance
    (Section 3.3; Fisher needs calibration data)."""
    pruning_chain: str = opt("residual", choices=CHAINS)
    """With a pruned init: residual keeps one set of hidden dims for the whole residual stream; authors chooses
    each matrix's outputs independently, as the authors' code did."""
    fisher_samples: int = opt(1024, minimum=1, metavar="N")
    """With init fisher: training examples for the empirical Fisher information (the paper's 1024)."""
    backbone_dropout: bool = False
    """Run the frozen backbone with dropout on while the side network trains (the authors' noisy ladder inputs;
    slower). Off: the backbone runs in eval mode, its taps deterministic."""
    backbone_dtype: str | None = opt(None, choices=BACKBONE_DTYPES)
    """The frozen backbone's dtype: float32, bfloat16, float16, or its linear layers quantized to int8 / nf4
    (bitsandbytes on CUDA, torchao on CPU; :mod:`laddertune.core.quantization`), applied after any pruned init
    read the full-precision weights; None leaves it as loaded (float32). The side network stays float32 (master
    weights); the taps are cast to its compute dtype."""
    quantize_embeddings: bool = False
    """With ``backbone_dtype`` int8 or nf4 on CUDA: store the input embeddings and the LM head in that scheme too
    (bitsandbytes' ``Embedding4bit``/``Embedding8bit`` and a 4/8-bit LM head; :mod:`laddertune.core.quantization`),
    instead of 16-bit: 1.5 GiB less for Llama-3-8B's 128k vocabulary. The LM head then dequantizes its weight for
    each use (a transient as large as the 16-bit head), and an embedding tied to the LM head is stored twice
    (quantized, as two tensors)."""
    attn_implementation: str = opt("sdpa", choices=ATTN_IMPLEMENTATIONS, flag="attn")
    """The side network's attention kernel: sdpa (no (B, H, T, T) probabilities kept for the backward where the
    kernel allows) or eager. T5 has only an eager kernel."""
    loss_chunk_size: int | None = opt(None, minimum=0, metavar="N")
    """LM heads: compute the training loss N positions at a time (:mod:`laddertune.core.chunked_loss`), so the
    full float32 logits and their gradient never exist at once (the output then has ``logits=None``); only while
    gradients are on: evaluation and generation always get logits. 0: the plain loss. None resolves when the model
    is built: for LM heads a chunk whose float32 logits hold 64 MiB (the same loss; :func:`loss_chunk_default`:
    512 positions for a 32k vocabulary, 128 for 128k), 0 for classifiers."""
    final_shortcut: bool | None = None
    """The head reads the backbone's own final hidden state plus the up-projected side output (the up-projection
    starts at zero, so step 0 is the backbone's own head: a classifier's linear probe, an LM's pretrained
    predictions; docs/results/ablations.md#the-final-shortcut); off: the side output alone, the authors' head. None resolves to the head's
    default when the model is built (:data:`FINAL_SHORTCUT_DEFAULT`: on for every head) and is saved resolved;
    checkpoints written before the field existed load as off, the setting they trained with."""
    final_gate: bool = False
    """With the final shortcut, mix the two with a learned scalar ``a`` instead of summing them, as quantized
    side tuning does (QST, Zhang et al. 2024): the head reads ``a * final + (1 - a) * Up(side)``, ``a`` starting at
    1 (so step 0 is still exactly the backbone's head) and free to lower the backbone's share.
    ``benchmarks/results/lst_lm_settings.md`` compares it with the plain sum."""
    reentry_layers: int = opt(0, minimum=0, metavar="K")
    """Causal LMs: add the up-projected side output to the backbone's residual stream K layers below the top, run
    the top K frozen layers again on it, then the final norm and the LM head (:mod:`laddertune.core.reentry`). The
    backbone's own upper layers then turn the side's signal into tokens: on the instruction sample (SmolLM2, 30
    layers) exact match rises from 25.9% to 57.6% with K=12 and to LoRA's 58.9% with K=16, at 0.36x LoRA's memory
    (``benchmarks/results/instruction_tuning_smollm2_reentry16.md``). The weights stay frozen, but the backward
    passes through those K layers: step time grows with K, and memory too unless side checkpointing (the LM heads'
    default) recomputes them (``benchmarks/results/reentry_cost.md``). 0: the side output joins at the final state
    (the final shortcut). Needs the final shortcut, not ``final_gate``; the backbone must run (no tap
    cache)."""
    method: str = opt("lst", choices=tuple(VARIANTS), kind=RECORD)
    """``lst`` (ladders from every kept layer); ``side-tuning`` (Zhang et al. 2020, the paper's Figure 8
    ablation: no ladders, the side network reads only the down-projected embedding output, and the final shortcut
    fuses the backbone's final state with the side's before the head; classification heads); ``pruned`` (the side
    network alone, pruned from the backbone by ``init`` magnitude or fisher: no ladders, no shortcut, and after
    initialisation the backbone's layers are removed, only its embeddings run: :mod:`laddertune.core.ablations`).
    Given by the training method, not an option of its own."""
    side_checkpointing: bool | None = None
    """Activation checkpointing of the side layers (``torch.utils.checkpoint``): each side layer keeps only its
    input and its tap for the backward and recomputes the rest, about one more side forward per step for the side's
    activation memory; the same losses and gradients. With ``reentry_layers`` the re-run backbone layers are
    recomputed the same way, one more forward of K layers. None resolves when the model is built: on for LM heads,
    off for classifiers (:data:`SIDE_CHECKPOINTING_DEFAULT`)."""
    side_dropout: float | None = opt(None, fraction=True, metavar="P")
    """The side network's dropout on hidden states: residual branches, embeddings and feed-forward activations;
    None keeps the backbone config's (MiniLM, BERT, GPT-2 and T5 0.1, Llama none). On CPU, 0 makes a MiniLM side
    step 8% faster (``benchmarks/results/side_step_profile.md``), and costs accuracy
    (``benchmarks/results/side_dropout_sst2.md``). The fields are found by name
    (:func:`~laddertune.core.architectures.set_hidden_dropout`); T5's ``dropout_rate`` drives its attention dropout
    too. A family without hidden-state dropout (Llama) refuses a value other than 0."""
    side_attention_dropout: float | None = opt(None, fraction=True, metavar="P")
    """The side network's dropout on attention probabilities; None keeps the backbone config's (MiniLM and BERT
    0.1, Llama 0.0). On CPU, 0 makes a MiniLM side step 6% faster
    (``benchmarks/results/side_step_profile.md``), and costs accuracy (``benchmarks/results/side_dropout_sst2.md``).
    Families whose config has no attention-only dropout (T5's ``dropout_rate`` covers every dropout) refuse a
    value."""
    side_attention_heads: int | None = opt(None, minimum=0, metavar="N")
    """The side network's number of attention heads, each side width / N wide (key/value heads follow the
    backbone's grouping where it divides). None chooses when the model is built (and saves the number): heads 64
    wide, or one head as wide as the side when it is narrower than 64 (:func:`~laddertune.core.heads.auto_heads`;
    the measurement: ``benchmarks/results/llm_scale_accuracy_minilm.md``: one head scores as the backbone's 12, at
    a third of the step time). 0 keeps the backbone's number of heads, each
    d_head/r wide, as the authors do (MiniLM at r=8: 12 heads of size 4). A pruned initialisation keeps whole
    backbone heads where the sizes allow (head-level importance)."""
    tap_projection: str | None = opt(None, choices=TAP_PROJECTIONS)
    """How each tap is narrowed while the backbone runs, so that no full-width hidden state is kept: the ladder's
    Down_i = A_i P_i, with P_i a frozen (tap_rank x d) projection applied inside the backbone's forward and A_i
    the trainable (d/r x tap_rank) matrix. ``pca``: P_i holds the top principal directions of tap i over
    calibration tokens (:mod:`laddertune.core.tap_projection`; needs calibration data); ``random``: one random
    orthogonal P (a fixed seed) shared by all taps; ``none``: the paper's full-width Down (taps d wide). None
    resolves when the model is built, and is saved resolved: for LM heads (:data:`TAP_PROJECTION_HEADS`) ``pca``
    when calibration data is given (``laddertune train`` gives it; on the instruction sample it lost nothing:
    ``benchmarks/results/lst_lm_settings.md``), else ``none``; for classifiers ``none``, where the projection
    measurably costs accuracy (``benchmarks/results/llm_scale_accuracy_minilm.md``)."""
    tap_rank: int | None = opt(None, minimum=1, metavar="K")
    """The width of a projected tap; None: the side width d/r (taps then cost d/r, not d)."""
    projection_tokens: int = opt(16384, minimum=1, metavar="N")
    """With ``tap_projection=pca``: calibration tokens (real, not padding) the principal directions are computed
    over."""
    backbone_name: str | None = record()
    """Filled in by ``save_pretrained``: the backbone's name or path."""
    backbone_revision: str | None = record()
    """Filled in by ``save_pretrained``: the backbone's commit hash, when known."""
    backbone_fingerprint: str | None = record()
    """Filled in by ``save_pretrained``: a dtype-free hash of the backbone's config and parameter names
    (:mod:`laddertune.core.fingerprint`)."""
    backbone_signature: dict[str, list[float]] | None = record()
    """Filled in by ``save_pretrained``: a few values of each unquantized backbone parameter, compared within a
    tolerance on loading (the same backbone in any dtype passes, another one fails)."""
    task_head: str | None = opt(None, choices=HEADS, kind=RECORD)
    """Filled in by ``get_ladder_model``: ``seq2seq_lm``, ``causal_lm`` or ``sequence_classification``. Set it to
    ``sequence_classification`` to give a bare base model (``BartModel``, ``BertModel``) a new classification head
    (:mod:`laddertune.core.task_model`)."""
    label_names: list[str] | None = record()
    """Filled in by ``save_pretrained`` for classification heads: the backbone's ``id2label`` in id order;
    ``from_pretrained`` restores it, so a checkpoint names its classes without ``results.json``."""
    problem_type: str | None = record()
    """Filled in by ``save_pretrained`` for classification heads: the backbone config's ``problem_type``
    (``single_label_classification``, ``regression``), restored by ``from_pretrained``."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.side_layers is not None:
            layers = self.side_layers
            if not layers:
                raise ConfigError("side_layers must name at least one layer (or be None for all layers)")
            if any(i < 0 for i in layers):
                raise ConfigError(f"side_layers must be non-negative integers, got {self.side_layers!r}")
            if len(set(layers)) != len(layers):
                raise ConfigError(f"side_layers has duplicates: {self.side_layers!r}")
            self.side_layers = sorted(layers)
            if self.side_layer_stride not in (None, 1):
                raise ConfigError("side_layers and side_layer_stride both pick the side layers: give one")
        if not math.isfinite(self.gate_init):
            raise ConfigError(f"gate_init must be a number, got {self.gate_init!r}")
        variant = self.variant
        if variant.final_shortcut is not None and self.final_shortcut not in (None, variant.final_shortcut):
            why = (
                "the final shortcut is its one fusion point"
                if variant.final_shortcut
                else "it runs without the backbone's layers"
            )
            raise ConfigError(f"method {self.method!r} fixes final_shortcut={variant.final_shortcut}: {why}")
        if not variant.runs_backbone and self.init == "random":
            raise ConfigError(
                f"method {self.method!r} starts from the pruned backbone: init must be magnitude or fisher"
            )
        if self.tap_projection not in (None, "none") and not variant.ladders:
            raise ConfigError(f"tap_projection applies to LST's ladders, not to method {self.method!r}")
        if self.quantize_embeddings and self.backbone_dtype not in ("int8", "nf4"):
            raise ConfigError("quantize_embeddings needs backbone_dtype int8 or nf4")
        if self.side_checkpointing and not variant.ladders:
            raise ConfigError(
                f"side_checkpointing applies to LST's side layers, not to method {self.method!r}"
            )
        if self.backbone_signature is not None and not _is_signature(self.backbone_signature):
            raise ConfigError("backbone_signature must map parameter names to lists of numbers")

    @property
    def name(self) -> str:
        """The training method these options are of (the method registry's name)."""
        return self.method

    def resolve_for_head(
        self, head: str, vocab_size: int | None = None, num_layers: int | None = None
    ) -> None:
        """Fill in ``task_head`` and the head-dependent defaults (``final_shortcut``, side checkpointing, the loss
        chunk for a vocabulary of ``vocab_size``, the side-layer stride for a deepest stack of ``num_layers``);
        refuse what the head cannot take (a one-line :class:`ConfigError`)."""
        self.task_head = head
        if self.side_layer_stride is None:
            deep = self.side_layers is None and num_layers is not None
            self.side_layer_stride = side_layer_stride_default(num_layers) if deep else 1
        if self.final_shortcut is None:
            fixed = self.variant.final_shortcut
            self.final_shortcut = FINAL_SHORTCUT_DEFAULT[head] if fixed is None else fixed
        ladders = self.variant.ladders
        if self.side_checkpointing is None:
            self.side_checkpointing = ladders and SIDE_CHECKPOINTING_DEFAULT[head]
        if self.loss_chunk_size is None:
            self.loss_chunk_size = loss_chunk_default(vocab_size) if head in LM_HEADS else 0
        if not ladders:  # the side reads the embedding output alone: nothing to narrow
            self.tap_projection = "none"
        elif self.tap_projection is None:  # get_ladder_model chose pca already when it had calibration data
            self.tap_projection = "none"
        if head not in self.variant.heads:
            raise ConfigError(
                f"method {self.method!r} supports {', '.join(self.variant.heads)} heads only, not {head}"
            )
        if self.final_gate and not self.final_shortcut:
            raise ConfigError("final_gate mixes the final shortcut's two terms: it needs final_shortcut")
        if self.reentry_layers:
            if head != "causal_lm":
                raise ConfigError(f"reentry_layers applies to causal LM heads, not to {head}")
            if not self.final_shortcut or self.final_gate:
                raise ConfigError(
                    "reentry_layers replaces the final shortcut's sum: it needs final_shortcut "
                    "without final_gate"
                )
            if num_layers is not None and self.reentry_layers > num_layers:
                raise ConfigError(
                    f"reentry_layers={self.reentry_layers} is more than the backbone's {num_layers} layers"
                )

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
        data = {"final_shortcut": False, **data}
        # written before side_layer_stride existed: every side layer (None then meant all)
        data = {"side_layer_stride": 1, **data}
        # written before tap_projection existed: full-width taps, and None meant other things
        if "tap_projection" not in data:
            data["tap_projection"] = "none"
            data.update({k: v for k, v in LEGACY_NONE.items() if data.get(k) is None})
        return cls(**data)

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
