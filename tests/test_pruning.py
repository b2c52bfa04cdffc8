"""Pruning initialisation: every side weight is the backbone's at the selected rows and columns."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch

from laddertune import ConfigError, LadderConfig, get_ladder_model
from laddertune.pruning import initialize_side, interleaved_drop, paper_side_layers

R = 2  # reduction factor: 32 -> 16 wide, 64 -> 32 FFN, head 8 -> 4


def top(prio: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(prio, descending=True)[:k].sort().values


class Planted:
    """Importance scores with a planted random row order per matrix, so the kept rows are known in advance."""

    def __init__(self, backbone, conv1d: bool = False) -> None:
        self.g = torch.Generator().manual_seed(7)
        self.conv1d = conv1d
        self.W = dict(backbone.named_parameters())
        self.imp = {n: torch.ones_like(w) for n, w in self.W.items()}
        self.prio: dict[str, torch.Tensor] = {}
        emb = backbone.get_input_embeddings().weight
        self.emb = next(n for n, w in self.W.items() if w is emb)
        self.hidden = torch.randperm(emb.shape[1], generator=self.g).float() + 1
        self.imp[self.emb] = self.hidden.expand_as(emb).clone()

    def rows(self, *names: str, n: int | None = None, tile: int = 1) -> torch.Tensor:
        """Plant one row order shared by ``names`` (their rows are scored together)."""
        w = self.W[names[0]]
        n = n or (w.shape[1] if self.conv1d else w.shape[0]) // tile
        p = torch.randperm(n, generator=self.g).float() + 1
        for name in names:
            full = p.repeat(tile)
            w = self.W[name]
            self.imp[name] = (full[None, :] if self.conv1d else full[:, None]).expand_as(w).clone()
            self.prio[name] = p
        return p


class Checker:
    """Compares side trunk parameters with backbone slices and records which were checked."""

    def __init__(self, stack, planted: Planted) -> None:
        self.side = dict(stack.trunk.named_parameters())
        self.P, self.checked = planted, set()

    def __call__(self, side: str, backbone: str, rows=None, cols=None) -> None:
        w = self.P.W[backbone].detach()
        t = self.P.conv1d and w.dim() == 2
        w = w.T if t else w
        w = w if rows is None else w[rows]
        w = w if cols is None else w[:, cols]
        w = w.T if t else w
        assert self.side[side].shape == w.shape, side
        assert torch.equal(self.side[side], w), f"{side} != pruned {backbone}"
        self.checked.add(side)

    def linear(self, side: str, backbone: str, rows, cols) -> None:
        self(f"{side}.weight", f"{backbone}.weight", rows, cols)
        if f"{side}.bias" in self.side:
            self(f"{side}.bias", f"{backbone}.bias", rows)

    def norm(self, side: str, backbone: str, dims) -> None:
        for part in ("weight", "bias"):
            if f"{side}.{part}" in self.side:
                self(f"{side}.{part}", f"{backbone}.{part}", dims)

    def all_checked(self) -> None:
        assert self.checked == set(self.side), sorted(set(self.side) - self.checked)


def build(family: str, head: str, chain: str, side_layers=(1, 2)):
    backbone = tiny_backbone(family, head)
    with torch.no_grad():  # norms are ones and biases zeros at init: make them tell their dims apart
        for p in backbone.parameters():
            if p.dim() == 1:
                p.uniform_(-1, 1)
    # the authors' side network (the backbone's heads, each d_head / r wide): rows chosen whatever head they are in
    cfg = LadderConfig(
        reduction_factor=R, side_layers=list(side_layers), pruning_chain=chain, side_attention_heads=0
    )
    return backbone, get_ladder_model(backbone, cfg)


def out_rows(P: Planted, chain: str, name: str, incoming: torch.Tensor, k: int) -> torch.Tensor:
    return incoming if chain == "residual" else top(P.prio[name], k)


@pytest.mark.parametrize("chain", ["residual", "authors"])
def test_t5_side_is_the_pruned_backbone(chain):
    backbone, model = build("t5", "seq2seq_lm", chain)
    P = Planted(backbone)
    for stack in ("encoder", "decoder"):
        for i in range(3):
            for li, att in enumerate(["SelfAttention", "EncDecAttention"][: 2 if stack == "decoder" else 1]):
                a = f"{stack}.block.{i}.layer.{li}.{att}."
                P.rows(a + "q.weight", a + "k.weight", a + "v.weight")
                P.rows(a + "o.weight")
            f = f"{stack}.block.{i}.layer.{2 if stack == 'decoder' else 1}.DenseReluDense."
            P.rows(f + "wi.weight")
            P.rows(f + "wo.weight")
    initialize_side(model, P.imp, chain=chain)

    H = top(P.hidden, 16)
    encoder_out = None
    for name, stack in model.side.stacks.items():
        assert stack.kept == [1, 2]
        check, incoming = Checker(stack, P), H
        for j, i in enumerate(stack.kept):
            s, b = f"block.{j}.layer.", f"{name}.block.{i}.layer."
            attentions = [("SelfAttention", False)] + (
                [("EncDecAttention", True)] if name == "decoder" else []
            )
            for li, (att, cross) in enumerate(attentions):
                check.norm(f"{s}{li}.layer_norm", f"{b}{li}.layer_norm", incoming)
                A = top(P.prio[f"{b}{li}.{att}.q.weight"], 16)
                kv_cols = encoder_out if cross else incoming
                check.linear(f"{s}{li}.{att}.q", f"{b}{li}.{att}.q", A, incoming)
                check.linear(f"{s}{li}.{att}.k", f"{b}{li}.{att}.k", A, kv_cols)
                check.linear(f"{s}{li}.{att}.v", f"{b}{li}.{att}.v", A, kv_cols)
                out = out_rows(P, chain, f"{b}{li}.{att}.o.weight", incoming, 16)
                check.linear(f"{s}{li}.{att}.o", f"{b}{li}.{att}.o", out, A)
                incoming = out
            # the relative bias of backbone layer 0 (buckets x heads, not pruned) lands in side layer 0
            bias = "0.SelfAttention.relative_attention_bias.weight"
            if j == 0:
                check(s + bias, f"{name}.block.0.layer.{bias}")
            else:
                assert s + bias not in check.side
            f = len(attentions)
            check.norm(f"{s}{f}.layer_norm", f"{b}{f}.layer_norm", incoming)
            F = top(P.prio[f"{b}{f}.DenseReluDense.wi.weight"], 32)
            check.linear(f"{s}{f}.DenseReluDense.wi", f"{b}{f}.DenseReluDense.wi", F, incoming)
            out = out_rows(P, chain, f"{b}{f}.DenseReluDense.wo.weight", incoming, 16)
            check.linear(f"{s}{f}.DenseReluDense.wo", f"{b}{f}.DenseReluDense.wo", out, F)
            incoming = out
        check.norm("final_layer_norm", f"{name}.final_layer_norm", incoming)
        check.all_checked()
        encoder_out = incoming
    if chain == "residual":
        assert torch.equal(encoder_out, H)


@pytest.mark.parametrize("chain", ["residual", "authors"])
def test_bert_post_norm_and_biases(chain):
    backbone, model = build("bert", "sequence_classification", chain)
    P = Planted(backbone)
    for i in range(3):
        b = f"bert.encoder.layer.{i}."
        P.rows(*(f"{b}attention.self.{n}.weight" for n in ("query", "key", "value")))
        for n in ("attention.output.dense", "intermediate.dense", "output.dense"):
            P.rows(f"{b}{n}.weight")
    initialize_side(model, P.imp, chain=chain)

    stack = model.side.stacks["body"]
    check, incoming = Checker(stack, P), top(P.hidden, 16)
    for j, i in enumerate(stack.kept):
        s, b = f"layer.{j}.", f"bert.encoder.layer.{i}."
        A = top(P.prio[f"{b}attention.self.query.weight"], 16)
        for n in ("query", "key", "value"):
            check.linear(f"{s}attention.self.{n}", f"{b}attention.self.{n}", A, incoming)
        out = out_rows(P, chain, f"{b}attention.output.dense.weight", incoming, 16)
        check.linear(f"{s}attention.output.dense", f"{b}attention.output.dense", out, A)
        check.norm(f"{s}attention.output.LayerNorm", f"{b}attention.output.LayerNorm", out)
        F = top(P.prio[f"{b}intermediate.dense.weight"], 32)
        check.linear(f"{s}intermediate.dense", f"{b}intermediate.dense", F, out)
        incoming = out_rows(P, chain, f"{b}output.dense.weight", out, 16)
        check.linear(f"{s}output.dense", f"{b}output.dense", incoming, F)
        check.norm(f"{s}output.LayerNorm", f"{b}output.LayerNorm", incoming)
    check.all_checked()


def test_llama_grouped_query_attention_keeps_query_and_key_heads_paired():
    backbone, model = build("llama", "causal_lm", "residual")
    P = Planted(backbone)
    for i in range(3):
        b = f"model.layers.{i}."
        P.rows(
            f"{b}self_attn.k_proj.weight", f"{b}self_attn.v_proj.weight"
        )  # 2 kv heads x 8; q scores are flat
        P.rows(f"{b}mlp.gate_proj.weight", f"{b}mlp.up_proj.weight")
        P.rows(f"{b}mlp.down_proj.weight")
        P.rows(f"{b}self_attn.o_proj.weight")
    initialize_side(model, P.imp)

    stack = model.side.stacks["body"]
    check, H = Checker(stack, P), top(P.hidden, 16)
    head_dim, side_head_dim, n_rep = 8, 4, 2
    for j, i in enumerate(stack.kept):
        s, b = f"layers.{j}.", f"model.layers.{i}."
        check.norm(f"{s}input_layernorm", f"{b}input_layernorm", H)
        K = top(P.prio[f"{b}self_attn.k_proj.weight"], 8)  # 2 side kv heads x 4
        check.linear(f"{s}self_attn.k_proj", f"{b}self_attn.k_proj", K, H)
        check.linear(f"{s}self_attn.v_proj", f"{b}self_attn.v_proj", K, H)
        # side query head h reads side kv head h // n_rep: its rows are the same dims of a query head of the
        # backbone kv head that row came from
        Q = torch.tensor(
            [
                (int(K[(h // n_rep) * side_head_dim + e]) // head_dim * n_rep + h % n_rep) * head_dim
                + int(K[(h // n_rep) * side_head_dim + e]) % head_dim
                for h in range(4)
                for e in range(side_head_dim)
            ]
        )
        check.linear(f"{s}self_attn.q_proj", f"{b}self_attn.q_proj", Q, H)
        check.linear(f"{s}self_attn.o_proj", f"{b}self_attn.o_proj", H, Q)
        check.norm(f"{s}post_attention_layernorm", f"{b}post_attention_layernorm", H)
        F = top(P.prio[f"{b}mlp.gate_proj.weight"], 32)
        check.linear(f"{s}mlp.gate_proj", f"{b}mlp.gate_proj", F, H)
        check.linear(f"{s}mlp.up_proj", f"{b}mlp.up_proj", F, H)
        check.linear(f"{s}mlp.down_proj", f"{b}mlp.down_proj", H, F)
    check.norm("norm", "model.norm", H)
    check.all_checked()


@pytest.mark.parametrize("chain", ["residual", "authors"])
def test_gpt2_conv1d_fused_qkv_and_position_table(chain):
    backbone, model = build("gpt2", "causal_lm", chain)
    P = Planted(backbone, conv1d=True)
    for i in range(3):
        b = f"transformer.h.{i}."
        P.rows(f"{b}attn.c_attn.weight", tile=3)  # q, k, v blocks share one row order
        for n in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            P.rows(f"{b}{n}.weight")
    initialize_side(model, P.imp, chain=chain)

    stack = model.side.stacks["body"]
    H = top(P.hidden, 16)
    check, incoming = Checker(stack, P), H
    for j, i in enumerate(stack.kept):
        s, b = f"h.{j}.", f"transformer.h.{i}."
        check.norm(f"{s}ln_1", f"{b}ln_1", incoming)
        A = top(P.prio[f"{b}attn.c_attn.weight"], 16)
        check.linear(f"{s}attn.c_attn", f"{b}attn.c_attn", torch.cat([A, A + 32, A + 64]), incoming)
        out = out_rows(P, chain, f"{b}attn.c_proj.weight", incoming, 16)
        check.linear(f"{s}attn.c_proj", f"{b}attn.c_proj", out, A)
        check.norm(f"{s}ln_2", f"{b}ln_2", out)
        F = top(P.prio[f"{b}mlp.c_fc.weight"], 64)
        check.linear(f"{s}mlp.c_fc", f"{b}mlp.c_fc", F, out)
        incoming = out_rows(P, chain, f"{b}mlp.c_proj.weight", out, 16)
        check.linear(f"{s}mlp.c_proj", f"{b}mlp.c_proj", incoming, F)
    check.norm("ln_f", "transformer.ln_f", incoming)
    assert torch.equal(check.side["wpe.weight"], P.W["transformer.wpe.weight"][:, H])
    check.checked.add("wpe.weight")
    check.all_checked()


def test_magnitude_keeps_the_largest_l1_rows_and_leaves_ladders_random():
    backbone, twin = tiny_backbone("t5", "seq2seq_lm"), tiny_backbone("t5", "seq2seq_lm")
    torch.manual_seed(3)
    random = get_ladder_model(twin, LadderConfig(reduction_factor=R))
    torch.manual_seed(3)
    pruned = get_ladder_model(backbone, LadderConfig(reduction_factor=R, init="magnitude"))
    W = dict(backbone.named_parameters())

    H = top(W["shared.weight"].abs().sum(0), 16)  # embedding (vocab, d): L1 over the vocabulary
    wi = W["encoder.block.1.layer.1.DenseReluDense.wi.weight"]
    F = top(wi[:, H].abs().sum(1), 32)
    side_wi = pruned.side.stacks["encoder"].trunk.block[1].layer[1].DenseReluDense.wi.weight
    assert torch.equal(side_wi, wi[F][:, H])
    kept_l1 = wi[F][:, H].abs().sum(1)
    dropped = torch.ones(64, dtype=torch.bool).index_fill_(0, F, False)
    assert kept_l1.min() >= wi[dropped][:, H].abs().sum(1).max()

    for (name, p), (_, q) in zip(pruned.side.named_parameters(), random.side.named_parameters(), strict=True):
        if ".trunk." in name:  # pruned from the backbone: differs from the random init
            assert not torch.equal(p, q) or p.dim() == 1 and torch.all(p == 1), name
        else:  # down/up projections, gates, head: not taken from the backbone
            assert torch.equal(p, q), name


def test_random_init_copies_nothing_from_the_backbone():
    backbone = tiny_backbone("t5", "seq2seq_lm")
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=R))
    W = dict(backbone.named_parameters())
    side_bias = (
        model.side.stacks["encoder"].trunk.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    )
    assert not torch.equal(
        side_bias, W["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    )
    side_q = model.side.stacks["encoder"].trunk.block[0].layer[0].SelfAttention.q.weight
    backbone_q = W["encoder.block.0.layer.0.SelfAttention.q.weight"]
    assert not torch.isin(side_q, backbone_q).any()


@pytest.mark.parametrize(
    ("family", "head"),
    [
        ("t5", "seq2seq_lm"),
        ("bert", "sequence_classification"),
        ("llama", "causal_lm"),
        ("gpt2", "causal_lm"),
    ],
)
def test_r1_all_layers_is_the_backbone_itself(family, head):
    """With r = 1 nothing is pruned: every side trunk weight is the backbone's, in the same place."""
    backbone = tiny_backbone(family, head)
    config = LadderConfig(reduction_factor=1, init="magnitude", side_attention_heads=0)
    model = get_ladder_model(backbone, config)
    W = dict(backbone.named_parameters())
    for stack in model.side.stacks.values():
        for name, p in stack.trunk.named_parameters():
            assert torch.equal(p, W[f"{stack.spec.trunk}.{name}"]), name


def test_fisher_init_needs_calibration_data_and_uses_it():
    backbone = tiny_backbone("t5", "seq2seq_lm")
    with pytest.raises(ConfigError, match="calibration"):
        get_ladder_model(backbone, LadderConfig(reduction_factor=R, init="fisher"))
    data = [tiny_batch("t5", "seq2seq_lm", seed=s) for s in range(2)]
    cfg = LadderConfig(reduction_factor=R, init="fisher", fisher_samples=4, side_attention_heads=0)
    model = get_ladder_model(backbone, cfg, calibration_data=data)
    from laddertune.pruning.importance import fisher_importance

    fisher = fisher_importance(backbone, data, num_examples=4)
    W = dict(backbone.named_parameters())
    H = top(fisher["shared.weight"].sum(0), 16)
    final = model.side.stacks["decoder"].trunk.final_layer_norm.weight
    assert torch.equal(final, W["decoder.final_layer_norm.weight"][H])
    q = W["decoder.block.2.layer.1.EncDecAttention.q.weight"]
    f = {n: fisher[f"decoder.block.2.layer.1.EncDecAttention.{n}.weight"][:, H] for n in "qkv"}
    A = top((f["q"] * f["k"] * f["v"]).sum(1), 16)
    assert torch.equal(
        model.side.stacks["decoder"].trunk.block[2].layer[1].EncDecAttention.q.weight, q[A][:, H]
    )


def test_bad_arguments_are_config_errors():
    _, model = build("gpt2", "causal_lm", "residual")
    with pytest.raises(ConfigError, match="chain"):
        initialize_side(model, {}, chain="sideways")
    with pytest.raises(ConfigError, match="no entry"):
        initialize_side(model, {})


def test_paper_layer_lists():
    assert paper_side_layers("t5-base", 12) == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert paper_side_layers("google-t5/t5-large", 24) == list(range(1, 24, 2))
    assert paper_side_layers("t5-3b", 24) == [23]
    assert paper_side_layers("facebook/bart-large", 12) == list(range(12))  # BART and VL runs keep all
    with pytest.raises(ConfigError, match="12 layers"):
        paper_side_layers("t5-base", 6)
    # Figure 6: 6 / 12 / 18 dropped over both t5-base stacks = 3 / 6 / 9 per stack
    assert interleaved_drop(12, 3) == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert interleaved_drop(12, 6) == [2, 3, 6, 7, 10, 11]
    assert interleaved_drop(12, 9) == [3, 7, 11]
    assert interleaved_drop(12, 0) == list(range(12))
    assert interleaved_drop(8, 4, stride=2) == [1, 3, 5, 7]  # §3.4: half dropped keeps the 2nd, 4th, ...
    with pytest.raises(ConfigError):
        interleaved_drop(12, 12)
