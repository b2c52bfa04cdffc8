"""Initialise the side network from the pruned backbone (LST §3.3).

Every matrix keeps 1/r of its rows (output dims), chosen by the L1 norm of their importance scores, and the columns
that the previous step kept (docs/concepts.md#fact-pruning-init):

- hidden dims first, from the token embedding's importance (L1 over the vocabulary);
- Q/K/V: columns take the incoming dims, rows are scored together, L1 of ``I_q * I_k * I_v``, the same rows in all
  three; the output projection's columns follow, its rows are scored by its own importance;
- feed-forward in (gate and up together, as Q/K/V) and out likewise; norms take the incoming dims;
- T5's relative bias (buckets x heads; heads are not pruned) is copied from backbone layer 0 into the first kept
  side layer; the final side norm comes from the pruned final norm; GPT-2's position table keeps the hidden dims.

BART (Table 2): the authors' BART code scored rows by a sum of ``|log Fisher|``. Fisher values are small (well
under 1), so ``|log F|`` is LARGEST for the rows with the smallest Fisher information: that score most likely kept
the least important rows. We score BART exactly as every other family, by the L1 norm of the Fisher (or magnitude)
itself, which keeps the most important rows, as the paper's §3.3 describes.

Side layer j mirrors backbone layer ``stack.kept[j]``; under ALBERT's shared layers every side layer is initialised
from the one shared group it stands for (the same pruned copy in each, which then train apart). Down/up projections and gates are not taken from the backbone.

Heads. The authors' side network (``side_attention_heads=0``: the backbone's heads, each d_head / r wide) ignores
heads, as the authors did: the kept rows need not fall evenly in heads (nor keep RoPE's frequency pairs; the side
network learns from there). A side that chose its own heads (:mod:`laddertune.core.heads`, the default) is pruned
head by head: key/value heads are ranked by their summed row scores and side key/value head g takes the g-th best
backbone head, WHOLE when the side's heads are as wide as the backbone's (rows in their order, RoPE's pairs
intact), its best rows when narrower; a side head wider than the backbone's takes whole heads in rank order, the
last one cut. Query heads follow their key/value head, best first (see :func:`_head_rows`).

Two chains (``LadderConfig.pruning_chain``):

- ``"residual"`` (default): one kept index set for the whole residual stream (the embedding's), so every residual
  add and norm in the side network combines the same backbone dims; inner dims (attention, FFN) are chosen per layer.
- ``"authors"``: each output projection's rows are chosen by its own importance, so the residual stream's dims change
  from sub-layer to sub-layer, as in the authors' code. T5's cross-attention then reads the encoder's last kept set;
  its Q and K/V columns differ, and its rows are scored by the product of the three per-matrix row L1 norms.

Grouped-query attention (Llama, Mistral, Qwen2): K and V have fewer rows than Q. We score K/V rows (their own shape)
by L1 of ``I_k * I_v * sum_h |I_q,h|``, the sum over the query heads that share the key/value head, and keep in Q,
for every kept K/V row, that row in each of those query heads, laid out so that side query head ``g * n_rep + t``
still reads side key/value head ``g``. With one query head per K/V head this is exactly the rule above.

Torch-Pruning (v1.6.1, which the authors used) was evaluated and is not used: its dependency graph, built by tracing
the model, (1) only expresses residual-coupled pruning, not the authors' chain; (2) couples T5's Q/K/V/O of every
layer through the shared relative bias, forcing one inner index set on all layers, and prunes the relative bias's
head dim, which must be kept; (3) cannot reach T5's shared embedding, the root of the hidden dims; (4) fails on
GPT-2's Conv1D (``TypeError`` in the graph; no pruner for that layer type); (5) did not finish building one Llama
pruning group in 5 minutes on a 2-layer, 64-wide model; and (6) prunes a model in place, so we would deep-copy the
whole backbone to fill a side network 1/r^2 its size. What remains is index selection, done below with a small
table per ``model_type``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .importance import fisher_importance, magnitude_importance
from .layouts import LAYOUTS, Attention, FeedForward, FusedAttention, Layout, Norm

logger = logging.getLogger(__name__)

CHAINS = ("residual", "authors")


# -- entry points --------------------------------------------------------------------------------------------------
def initialize_from_backbone(model: nn.Module, calibration_data=None) -> None:
    """Score the backbone as ``model.ladder_config.init`` says (magnitude or Fisher) and initialise the side from it.

    Raises:
        ConfigError: Fisher importance without calibration data.
    """
    cfg = model.ladder_config
    if cfg.init == "magnitude":
        importance = magnitude_importance(model.backbone)
    elif cfg.init == "fisher":
        if calibration_data is None:
            raise ConfigError(
                "init='fisher' needs calibration_data: an iterable of training batches with labels"
            )
        importance = fisher_importance(model.backbone, calibration_data, num_examples=cfg.fisher_samples)
    else:
        raise ConfigError(f"init={cfg.init!r} does not initialise from the backbone")
    initialize_side(model, importance, chain=cfg.pruning_chain)
    del importance  # the size of the backbone in fp32


@torch.no_grad()
def initialize_side(model: nn.Module, importance: dict[str, Tensor], chain: str = "residual") -> None:
    """Copy pruned backbone weights into every side trunk parameter of a :class:`LadderModel`, in place.

    Args:
        model: the ladder model; its side trunks' shapes say how many rows each matrix keeps.
        importance: ``{backbone parameter name: score}`` (``model.backbone.named_parameters()`` names), as
            :func:`laddertune.pruning.magnitude_importance` or ``fisher_importance`` return.
        chain: ``"residual"`` or ``"authors"`` (module docstring).

    Raises:
        ConfigError: unknown chain, an architecture without a pruning layout, or a missing importance score.
    """
    if chain not in CHAINS:
        raise ConfigError(f"pruning chain must be one of {', '.join(CHAINS)}; got {chain!r}")
    backbone = model.backbone
    layout = _match_layout(backbone, model.side.stacks)
    p = _Pruner(backbone, importance, layout.conv1d, chain)
    p.head_level = model.ladder_config.side_attention_heads != 0
    embedding = backbone.get_input_embeddings().weight
    embedding_name = next(n for n, w in backbone.named_parameters() if w is embedding)
    width = next(iter(model.side.stacks.values())).embed_down.out_features  # d / r
    hidden = _top(p.score(embedding_name, native=True).sum(0), width)  # (vocab, d): L1 over the vocabulary
    first = next(iter(model.side.stacks.values())).spec
    if first.embedding_projection:  # ALBERT: embeddings are narrower; the width is the projection's rows
        projection = f"{first.trunk}.{first.embedding_projection}.weight"
        hidden = _top(p.score(projection).sum(1), width)  # (d, embedding_size): L1 over the embedding dims
    encoder_out = None
    for name, stack in model.side.stacks.items():
        src = f"{stack.spec.trunk}.{stack.spec.layers}."
        p.begin(stack.trunk, stack, hidden)
        incoming = hidden
        for j, i in enumerate(stack.kept):
            for step in layout.layers.get(name, ()):
                incoming = p.step(
                    step,
                    f"{stack.spec.layers}.{j}.",
                    f"{src}{stack.spec.block(i)}.",  # the shared block of application i (ALBERT)
                    f"{src}0.",
                    incoming,
                    encoder_out,
                )
        if stack.spec.final_norm:
            p.norm(stack.spec.final_norm, f"{stack.spec.trunk}.{stack.spec.final_norm}", incoming)
        for table in layout.hidden_tables:
            p.copy(f"{table}.weight", f"{stack.spec.trunk}.{table}.weight", cols=hidden, native=True)
        p.finish()
        stack.pruned_dims = (hidden, incoming)  # the backbone dims the side trunk starts in and ends in
        encoder_out = incoming
    logger.info("side network initialised from the pruned backbone (%s chain)", chain)


def _names(step) -> tuple[str, ...]:
    if isinstance(step, Norm):
        return (step.name,)
    if isinstance(step, FusedAttention):
        return (step.qkv, step.o)
    if isinstance(step, FeedForward):
        return (step.out,)
    return (step.q, step.k, step.v, step.o)


def _match_layout(backbone: nn.Module, stacks) -> Layout:
    """The layout whose module names all exist in every stack's first backbone layer, or an empty one."""
    firsts = {}
    for name, stack in stacks.items():
        layers = backbone.get_submodule(f"{stack.spec.trunk}.{stack.spec.layers}".strip("."))
        firsts[name] = dict(layers[0].named_modules())
    for key, layout in LAYOUTS.items():
        if all(
            name in layout.layers and all(n in modules for step in layout.layers[name] for n in _names(step))
            for name, modules in firsts.items()
        ):
            logger.debug("pruning with the %s layout", key)
            return layout
    logger.warning("no pruning layout matches this backbone's layers: every side matrix is pruned on its own")
    return Layout({})


# -- the bookkeeping -----------------------------------------------------------------------------------------------
def _top(score: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores, ascending (ties: the lower index wins)."""
    return torch.argsort(score, descending=True, stable=True)[:k].sort().values


class _Pruner:
    """Index selection from backbone tensors into one side trunk at a time; matrices are handled as (out, in)."""

    def __init__(self, backbone: nn.Module, importance: dict[str, Tensor], conv1d: bool, chain: str) -> None:
        self.weights = dict(backbone.named_parameters())
        self.importance, self.conv1d, self.chain = importance, conv1d, chain
        cfg = backbone.config.get_text_config()
        self.backbone, self.config, self.head_level = backbone, cfg, False
        self.width = backbone.get_input_embeddings().weight.shape[-1]
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or 1  # read only under GQA

    # side trunk being filled
    def begin(self, trunk: nn.Module, stack, hidden: Tensor) -> None:
        self.side = dict(trunk.named_parameters())
        self.done: set[str] = set()
        self.stack, self.hidden = stack, hidden
        self.side_heads = getattr(stack.trunk_config, stack.family.heads)

    def finish(self) -> None:
        for name in sorted(set(self.side) - self.done):
            self.fallback(name)

    def _backbone_name(self, side_name: str) -> str:
        """The backbone parameter a side parameter mirrors: side layer j is backbone layer ``kept[j]``."""
        spec, layers = self.stack.spec, f"{self.stack.spec.layers}."
        if side_name.startswith(layers):
            j, _, rest = side_name[len(layers) :].partition(".")
            side_name = f"{layers}{spec.block(self.stack.kept[int(j)])}.{rest}"
        return f"{spec.trunk}.{side_name}".strip(".")

    def fallback(self, side_name: str) -> None:
        """Prune a parameter no layout step covers, dim by dim: a dim of the backbone's width keeps the residual
        stream's dims (so it still lines up with its neighbours); any other shrunk dim keeps its rows of largest
        L1 importance; a dim the side did not shrink is copied whole. No structural coupling beyond that."""
        name = self._backbone_name(side_name)
        dst = self.side[side_name]
        if name not in self.weights or self.weights[name].dim() != dst.dim():
            logger.debug("side parameter %s has no backbone counterpart: left as initialised", side_name)
            return
        w, score = self.weights[name].detach(), self.score(name, native=True)
        for d, (n_side, n_back) in enumerate(zip(dst.shape, w.shape, strict=True)):
            if n_side == n_back:
                continue
            if n_side == len(self.hidden) and n_back == self.width:
                keep = self.hidden
            else:
                keep = _top(score.transpose(0, d).flatten(1).sum(1) if w.dim() > 1 else score, n_side)
            w, score = w.index_select(d, keep.to(w.device)), score.index_select(d, keep.to(score.device))
        dst.copy_(w)
        self.done.add(side_name)

    def has(self, side_name: str) -> bool:
        return side_name in self.side

    def _out_in(self, t: Tensor) -> Tensor:
        return t.T if self.conv1d and t.dim() == 2 else t

    def score(self, name: str, native: bool = False) -> Tensor:
        """The importance of backbone parameter ``name``, as (out, in) for matrices, made non-negative."""
        if name not in self.importance:
            raise ConfigError(f"the importance scores have no entry for backbone parameter {name!r}")
        s = self.importance[name].float().abs()
        return s if native else self._out_in(s)

    def rows(self, side_name: str) -> int:
        return self._out_in(self.side[side_name]).shape[0]

    def copy(self, side_name: str, name: str, rows=None, cols=None, native: bool = False) -> None:
        """side[side_name] <- backbone[name][rows][:, cols] (in (out, in) terms unless ``native``)."""
        w = self.weights[name].detach()
        w = w if native else self._out_in(w)
        if rows is not None:
            w = w[rows.to(w.device)]
        if cols is not None:
            w = w[:, cols.to(w.device)]
        w = w if native else self._out_in(w)
        dst = self.side[side_name]
        if w.shape != dst.shape:
            raise RuntimeError(
                f"pruned {name} has shape {tuple(w.shape)}, side {side_name} {tuple(dst.shape)}"
            )
        dst.copy_(w)
        self.done.add(side_name)

    def linear(self, side_prefix: str, prefix: str, rows: Tensor, cols: Tensor) -> None:
        self.copy(f"{side_prefix}.weight", f"{prefix}.weight", rows, cols)
        if self.has(f"{side_prefix}.bias"):
            self.copy(f"{side_prefix}.bias", f"{prefix}.bias", rows)

    def norm(self, side_prefix: str, prefix: str, dims: Tensor) -> None:
        for part in ("weight", "bias"):
            if self.has(f"{side_prefix}.{part}"):
                self.copy(f"{side_prefix}.{part}", f"{prefix}.{part}", dims)

    def out_rows(self, side_name: str, name: str, cols: Tensor, incoming: Tensor) -> Tensor:
        """Rows of a projection back into the residual stream: the stream's own dims, or its own best rows."""
        if self.chain == "residual":
            return incoming
        return _top(self.score(name)[:, cols].sum(1), self.rows(side_name))

    def step(
        self, step, sp: str, bp: str, layer0: str, incoming: Tensor, encoder_out: Tensor | None
    ) -> Tensor:
        """Prune one step of side layer ``sp`` (side prefix) from backbone layer ``bp``; returns the outgoing dims."""
        if isinstance(step, Norm):
            self.norm(sp + step.name, bp + step.name, incoming)
            return incoming
        if isinstance(step, FeedForward):
            ins = [n for n in step.ins if self.has(f"{sp}{n}.weight")]
            score = math.prod(self.score(f"{bp}{n}.weight")[:, incoming] for n in ins)  # L1 of the product
            inner = _top(score.sum(1), self.rows(f"{sp}{ins[0]}.weight"))
            for n in ins:
                self.linear(sp + n, bp + n, inner, incoming)
            out = self.out_rows(f"{sp}{step.out}.weight", f"{bp}{step.out}.weight", inner, incoming)
            self.linear(sp + step.out, bp + step.out, out, inner)
            return out
        if isinstance(step, FusedAttention):
            s = self.score(f"{bp}{step.qkv}.weight")[:, incoming]  # (3 * inner, cols)
            q, k, v = s.chunk(3)
            score, rows = (q * k * v).sum(1), self.rows(f"{sp}{step.qkv}.weight") // 3
            if self.head_level:  # heads as in attention(), without key/value grouping
                by_head = score.view(self.stack.backbone_heads, -1)  # (heads, head size)
                inner, _, _ = _head_rows(
                    by_head, by_head.sum(1, keepdim=True), self.side_heads, rows // self.side_heads, 1
                )
            else:
                inner = _top(score, rows)
            fused = torch.cat([inner + part * len(q) for part in range(3)])
            self.linear(sp + step.qkv, bp + step.qkv, fused, incoming)
            out = self.out_rows(f"{sp}{step.o}.weight", f"{bp}{step.o}.weight", inner, incoming)
            self.linear(sp + step.o, bp + step.o, out, inner)
            return out
        return self.attention(step, sp, bp, layer0, incoming, encoder_out if step.cross else incoming)

    def attention(self, a: Attention, sp: str, bp: str, layer0: str, cols: Tensor, kv_cols: Tensor) -> Tensor:
        s_q, s_k, s_v = (self.score(f"{bp}{n}.weight") for n in (a.q, a.k, a.v))
        n_rep = s_q.shape[0] // s_k.shape[0]  # query heads per key/value head (1 without GQA)
        heads = s_q.shape[0] // self._head_size(s_q.shape[0])  # the backbone's query heads
        groups = heads // n_rep if self.head_level else self.kv_heads if n_rep > 1 else 1
        head_dim = s_k.shape[0] // groups
        q_head = s_q[:, cols].sum(1).view(groups, n_rep, head_dim).sum(2)  # (kv heads, n_rep): per query head
        # sum |I_q| over the query heads that share each key/value row: (kv rows, in)
        s_q = s_q.view(groups, n_rep, head_dim, -1).sum(1).flatten(0, 1)
        if torch.equal(cols, kv_cols):
            score = (s_q[:, cols] * s_k[:, cols] * s_v[:, cols]).sum(1)
        else:  # cross-attention in the authors' chain: columns differ, so multiply the row norms
            score = s_q[:, cols].sum(1) * s_k[:, kv_cols].sum(1) * s_v[:, kv_cols].sum(1)
        side_rows = self.rows(f"{sp}{a.k}.weight")
        if self.head_level:
            side_q = self.rows(f"{sp}{a.q}.weight")
            side_groups = side_rows * self.side_heads // side_q  # the side's key/value heads
            kv_rows, q_rows, primary = _head_rows(
                score.view(groups, head_dim),
                q_head,
                side_groups,
                side_rows // side_groups,
                side_q // side_rows,
            )
        else:  # the authors' rule: rows by score, whatever head they fall in
            kv_rows = _top(score, side_rows)
            kept = kv_rows.view(groups, 1, -1)  # (side kv heads, 1, side head dim)
            rep = torch.arange(n_rep, device=kept.device).view(1, -1, 1)
            # side query head g * n_rep + t reads side kv head g: take query head (kv head of the row) * n_rep + t
            q_rows = (((kept // head_dim) * n_rep + rep) * head_dim + kept % head_dim).flatten()
            primary = None
        self.linear(sp + a.q, bp + a.q, q_rows, cols)
        self.linear(sp + a.k, bp + a.k, kv_rows, kv_cols)
        self.linear(sp + a.v, bp + a.v, kv_rows, kv_cols)
        out = self.out_rows(f"{sp}{a.o}.weight", f"{bp}{a.o}.weight", q_rows, cols)
        self.linear(sp + a.o, bp + a.o, out, q_rows)
        if a.position_bias and self.has(f"{sp}{a.position_bias}.weight"):  # (buckets, heads)
            # the authors' side keeps every head: copied whole; else each side head's first backbone head's
            name = f"{layer0}{a.position_bias}.weight"
            self.copy(f"{sp}{a.position_bias}.weight", name, cols=primary, native=True)
        return out

    def _head_size(self, q_rows: int) -> int:
        """The backbone's per-head size in this stack (query rows / its heads)."""
        return q_rows // self.stack.backbone_heads


def _head_rows(
    score: Tensor, q_head: Tensor, side_groups: int, side_size: int, side_rep: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Head-level selection of one attention's rows (module docstring, "Heads").

    Args:
        score: (kv heads, head size) the importance of each backbone key/value row.
        q_head: (kv heads, query heads per kv head) the importance of each backbone query head.
        side_groups, side_size, side_rep: the side's key/value heads, their size, query heads per key/value head.

    Returns:
        (kv rows (side_groups * side_size,), q rows (side_groups * side_rep * side_size,) in the side's query-head
        order, the backbone query head each side query head starts from (side_groups * side_rep,)).
    """
    groups, size = score.shape
    n_rep = q_head.shape[1]
    order = torch.argsort(score.sum(1), descending=True, stable=True).tolist()  # kv heads, best first
    q_order = torch.argsort(q_head, dim=1, descending=True, stable=True).tolist()  # (kv heads, n_rep)
    heads: list[list[tuple[int, int]]] = []  # per side kv head: its (backbone kv head, dim) rows
    if side_size <= size:  # each side head: one backbone head, whole, or its best rows
        for b in (order * side_groups)[:side_groups]:  # (a side with more heads than the backbone repeats)
            heads.append([(b, int(e)) for e in _top(score[b], side_size)])
    else:  # each side head: whole backbone heads in rank order, the last one cut to its best rows
        flat = [(b, int(e)) for b in order for e in _top(score[b], size)]
        flat = (flat * math.ceil(side_groups * side_size / len(flat)))[: side_groups * side_size]
        heads = [flat[g * side_size : (g + 1) * side_size] for g in range(side_groups)]
    kv_rows = [b * size + e for head in heads for b, e in head]
    q_rows, primary = [], []
    for head in heads:
        # side query head g * side_rep + t reads side kv head g (repeat_kv's layout)
        for t in range(side_rep):
            q_rows += [(b * n_rep + q_order[b][t % n_rep]) * size + e for b, e in head]
            primary.append(head[0][0] * n_rep + q_order[head[0][0]][t % n_rep])
    return torch.tensor(kv_rows), torch.tensor(q_rows), torch.tensor(primary)
