"""The family matrix: every tested architecture family, every head it has, on tiny random models from configs.

Each case builds the family's task model, puts an LST side network next to it with magnitude-pruning
initialisation, and checks: forward and backward, a few AdamW steps lower the loss, every side parameter gets a
gradient, the backbone stays bit-identical, save/load gives identical logits, and generation where the head
generates. No family here has a row of its own in laddertune: they are found by ``discover_family``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers as T

from laddertune import LadderConfig, LadderModel, get_ladder_model
from laddertune.baselines import prepare_baseline
from laddertune.core import cpu_dropout
from laddertune.core.discovery import discover_family
from laddertune.core.side_network import EMBED
from laddertune.core.taps import collect_taps
from laddertune.errors import ConfigError
from laddertune.training.config import TrainConfig

V = 64
ENC = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)
DEC = dict(
    ENC, num_key_value_heads=2, head_dim=8
)  # grouped-query attention: 4 query heads, 2 key/value heads
T5 = dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, decoder_start_token_id=0)
BART = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=64,
    decoder_start_token_id=2,
)
CLS, LM, S2S = "sequence_classification", "causal_lm", "seq2seq_lm"
# name -> (model_type, config fields, heads)
MATRIX = {
    "bert": ("bert", ENC, (CLS,)),
    "roberta": ("roberta", ENC, (CLS,)),
    "xlm-roberta": ("xlm-roberta", ENC, (CLS,)),
    "distilbert": (
        "distilbert",
        dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64),
        (CLS,),
    ),
    "deberta-v2": (
        "deberta-v2",
        dict(
            ENC,
            relative_attention=True,
            max_relative_positions=16,
            position_buckets=8,
            pos_att_type=["p2c", "c2p"],
        ),
        (CLS,),
    ),
    "electra": ("electra", dict(ENC, embedding_size=16), (CLS,)),  # embeddings narrower than the layers
    # one layer group shared by 3 layers; embeddings narrower than the layers, mapped inside the trunk
    "albert": ("albert", dict(ENC, embedding_size=16, num_hidden_layers=3), (CLS,)),
    "modernbert": (
        "modernbert",
        dict(
            ENC,
            num_hidden_layers=3,
            global_attn_every_n_layers=3,
            local_attention=16,
            sep_token_id=1,
            cls_token_id=2,
        ),
        (CLS,),
    ),
    "llama": ("llama", DEC, (LM, CLS)),
    "mistral": ("mistral", dict(DEC, sliding_window=None), (LM, CLS)),
    "qwen2": ("qwen2", DEC, (LM, CLS)),
    "qwen3": ("qwen3", DEC, (LM, CLS)),  # q/k norms over head_dim
    "gemma": ("gemma", DEC, (LM, CLS)),  # scaled embeddings, tied head
    "gemma2": ("gemma2", dict(DEC, sliding_window=16, query_pre_attn_scalar=8), (LM, CLS)),
    "phi3": ("phi3", DEC, (LM, CLS)),  # fused qkv_proj and gate_up_proj
    "gpt2": ("gpt2", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64), (LM, CLS)),
    "gpt_neox": ("gpt_neox", dict(ENC, rotary_pct=0.5), (LM, CLS)),  # partial rotary
    "opt": ("opt", dict(ENC, ffn_dim=64, word_embed_proj_dim=32), (LM, CLS)),
    "t5": ("t5", T5, (S2S,)),
    "t5-v1.1": ("t5", dict(T5, feed_forward_proj="gated-gelu", tie_word_embeddings=False), (S2S,)),
    "mt5": ("mt5", T5, (S2S,)),
    "bart": ("bart", BART, (S2S, CLS)),
    "mbart": ("mbart", BART, (S2S, CLS)),
}
AUTO = {CLS: T.AutoModelForSequenceClassification, LM: T.AutoModelForCausalLM, S2S: T.AutoModelForSeq2SeqLM}
CASES = [
    pytest.param(name, head, id=f"{name}-{head}") for name, (_, _, heads) in MATRIX.items() for head in heads
]


def tiny(name: str, head: str | None, seed: int = 0):
    """The family's tiny task model for ``head``; ``head=None``: its bare base model (``AutoModel``)."""
    model_type, fields, _ = MATRIX[name]
    config = T.AutoConfig.for_model(
        model_type, vocab_size=V, pad_token_id=0, eos_token_id=1, bos_token_id=2, num_labels=2, **fields
    )
    torch.manual_seed(seed)
    return AUTO.get(head, T.AutoModel).from_config(config).eval()


def batch(head: str) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (2, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    ids[0, -1] = ids[1, -3] = 1  # an end-of-sentence token ends each example (BART's classifier pools it)
    ids = ids.masked_fill(mask == 0, 0)
    out = {"input_ids": ids, "attention_mask": mask}
    if head == S2S:
        out["labels"] = torch.randint(3, V, (2, 3), generator=g)
    elif head == LM:
        out["labels"] = ids.masked_fill(mask == 0, -100)
    else:
        out["labels"] = torch.tensor([0, 1])
    return out


@pytest.mark.parametrize(("name", "head"), CASES)
def test_family(name, head, tmp_path):
    check_family(name, head, head, tmp_path)


@pytest.mark.parametrize("name", ["bart", "bert", "albert"])
def test_bare_base_model_plus_a_new_head(name, tmp_path):
    """``get_ladder_model(BartModel(...), LadderConfig(task_head=...))``: the same checks as its classifier."""
    check_family(name, None, CLS, tmp_path)
    bare = tiny(name, None)
    model = get_ladder_model(bare, LadderConfig(reduction_factor=4, task_head=CLS))
    assert model.backbone.base_model is bare  # held, not copied
    out = model.side.head[-1]  # the new head's output layer: the family's init (std 0.02), zero bias
    out = getattr(out, "out_proj", out)
    assert 0.005 < float(out.weight.detach().std()) < 0.05 and not out.bias.any()
    with pytest.raises(ConfigError, match="bare base model"):
        get_ladder_model(tiny(name, None))


def check_family(name: str, built: str | None, head: str, tmp_path) -> None:
    """The matrix's checks on ``tiny(name, built)`` as an LST model with ``head`` (``built=None``: bare)."""
    backbone = tiny(name, built)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    config = LadderConfig(reduction_factor=4, init="magnitude", task_head=None if built else head)
    model = get_ladder_model(backbone, config)
    assert model.head == head
    model.eval()  # dropout off: the loss curve is the optimiser's alone
    data = batch(head)
    opt = torch.optim.AdamW(model.side.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        loss = model(**data).loss
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.side.named_parameters() if p.grad is None]
            assert not missing, f"side parameters without a gradient: {missing[:5]}"
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the backbone changed"
    assert not any(p.requires_grad for p in backbone.parameters())

    model.save_pretrained(tmp_path)
    reloaded = LadderModel.from_pretrained(tiny(name, built), tmp_path).eval()
    with torch.no_grad():
        inputs = {k: v for k, v in data.items() if k != "labels"}
        if head == S2S:
            inputs["labels"] = data["labels"]
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
    if head in (LM, S2S):
        out = model.generate(data["input_ids"], data["attention_mask"], max_new_tokens=3)
        assert out.shape[0] == 2 and out.shape[1] >= 3


@pytest.mark.parametrize(("name", "head"), CASES)
def test_family_side_checkpointing_gives_the_same_gradients(name, head):
    """Every family's side layers run under activation checkpointing (train mode, side dropout on)."""
    data, grads = batch(head), []
    for flag in (False, True):
        torch.manual_seed(3)
        model = get_ladder_model(tiny(name, head), LadderConfig(reduction_factor=4, side_checkpointing=flag))
        model.train()
        torch.manual_seed(5)
        model(**data).loss.backward()
        grads.append({n: p.grad for n, p in model.side.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:  # float32 rounding only: see tests/test_side_checkpointing.py
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, msg=n)


def test_bart_classifier_reads_the_encoder_only():
    """Table 2's setting: the side mirrors BART's encoder (post-norm, biased layers at d/r); no decoder side."""
    model = get_ladder_model(tiny("bart", CLS), LadderConfig(reduction_factor=4))
    assert list(model.side.stacks) == ["encoder"]
    side = model.side.stacks["encoder"].trunk
    assert (
        type(side).__name__ == "BartEncoder"
        and side.config.d_model == 8
        and side.config.encoder_ffn_dim == 16
    )
    assert side.layers[0].self_attn.q_proj.bias is not None
    assert type(model.side.head[0]).__name__ == "BartClassificationHead"  # dense, tanh, out projection


def test_bart_classifier_pools_the_last_eos_token():
    """The side state at the LAST </s> (position 4 here, not 1) is what is up-projected and classified."""
    model = get_ladder_model(tiny("bart", CLS), LadderConfig(reduction_factor=4)).eval()
    seen = {}
    model.side.stacks["encoder"].trunk.register_forward_hook(
        lambda m, a, out: seen.update(side=out.last_hidden_state)
    )
    model.side.up.register_forward_pre_hook(lambda m, args: seen.update(pooled=args[0].clone()))
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 1, 7, 8, 1, 0]]), attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0]]))
    assert torch.equal(seen["pooled"], seen["side"][:, 4])
    with pytest.raises(ValueError, match="end-of-sentence"):
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))


def test_discovered_families_keep_the_old_table():
    """BERT, Llama, GPT-2 and T5 are discovered exactly as the hand-written table described them."""
    bert = discover_family(tiny("bert", CLS), CLS)
    assert bert.cls_head == ("bert.pooler.dense", "bert.pooler.activation", "dropout", "classifier")
    assert (bert.cls_pool, bert.side_mask, bert.stacks[0].trunk, bert.stacks[0].layers) == (
        "first",
        "bidirectional",
        "bert.encoder",
        "layer",
    )
    llama = discover_family(tiny("llama", LM), LM)
    assert dataclasses.astuple(llama.stacks[0])[1:] == (
        "model",
        "model",
        "layers",
        ("num_hidden_layers",),
        "embed_tokens",
        "norm",
        (),  # no shared layers
        None,  # no embedding projection inside the trunk
    )
    assert llama.reduce == ("hidden_size", "intermediate_size", "head_dim")
    gpt2 = discover_family(tiny("gpt2", CLS), CLS)
    assert (gpt2.stacks[0].layers, gpt2.stacks[0].token_embedding, gpt2.stacks[0].final_norm) == (
        "h",
        "wte",
        "ln_f",
    )
    assert (gpt2.cls_head, gpt2.cls_pool) == (("score",), "last")
    t5 = discover_family(tiny("t5", S2S), S2S)
    assert [s.name for s in t5.stacks] == ["encoder", "decoder"]
    assert t5.reduce == ("d_model", "d_ff", "d_kv") and t5.stacks[0].final_norm == "final_layer_norm"


def test_reduced_configs_stay_valid_for_the_family():
    """The authors' heads (side_attention_heads=0): GQA keeps its key/value heads, head_dim shrinks with the width.
    The default: one head as wide as the side (8 < 64), head_dim following it."""
    model = get_ladder_model(tiny("qwen3", LM), LadderConfig(reduction_factor=4, side_attention_heads=0))
    cfg = model.side.stacks["body"].trunk.config
    assert (cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads) == (8, 2, 4, 2)
    assert cfg.num_hidden_layers == 2
    cfg = (
        get_ladder_model(tiny("qwen3", LM), LadderConfig(reduction_factor=4)).side.stacks["body"].trunk.config
    )
    assert (cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads) == (8, 8, 1, 1)


def test_albert_side_layers_are_one_unshared_group_per_application():
    """ALBERT runs one shared group 3 times: 3 taps (one per application, as its hidden_states), 3 side groups of
    their own weights at d/r, each initialised from the pruned shared group; the side skips the embedding mapping."""
    backbone = tiny("albert", CLS)
    # full-width taps, to compare them with the backbone's hidden states
    model = get_ladder_model(
        backbone, LadderConfig(reduction_factor=4, init="magnitude", tap_projection="none")
    )
    stack = model.side.stacks["body"]
    assert (stack.num_backbone_layers, stack.kept, len(stack.layers)) == (3, [0, 1, 2], 3)
    assert stack.trunk.config.num_hidden_groups == 3 and stack.trunk.config.hidden_size == 8
    assert isinstance(stack.trunk.embedding_hidden_mapping_in, torch.nn.Identity)
    assert stack.embed_down.in_features == 32  # the tap is the mapped embedding output, hidden_size wide
    q = [g.albert_layers[0].attention.query.weight for g in stack.layers]
    assert q[0].data_ptr() != q[1].data_ptr() and torch.equal(q[0], q[1]) and torch.equal(q[1], q[2])
    data = batch(CLS)
    with torch.no_grad():
        taps = collect_taps(model, data["input_ids"], data["attention_mask"])["body"]
        states = backbone.albert(
            **{k: data[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True
        )
    assert sorted(taps) == [EMBED, 0, 1, 2]
    for i in (EMBED, 0, 1, 2):  # hidden_states[0] is the mapped embedding output, [i + 1] application i's
        assert torch.equal(taps[i], states.hidden_states[i + 1])
    assert not torch.equal(taps[0], taps[2])
    fisher = LadderConfig(reduction_factor=4, init="fisher", fisher_samples=2, side_layers=[0, 2])
    model = get_ladder_model(tiny("albert", CLS), fisher, [data])
    ffn = [g.albert_layers[0].ffn.weight for g in model.side.stacks["body"].layers]  # (16, 8) each
    assert len(ffn) == 2 and torch.equal(ffn[0], ffn[1])  # both from the one shared group's pruned ffn


def test_undiscoverable_and_excepted_families_say_why():
    class NoLayersForSequenceClassification(T.BertForSequenceClassification):
        pass

    model = NoLayersForSequenceClassification(
        T.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    )
    model.bert.encoder.layer = torch.nn.Sequential(*model.bert.encoder.layer)  # no ModuleList of layers
    with pytest.raises(ConfigError, match="cannot discover the layers"):
        get_ladder_model(model)


@pytest.mark.parametrize(
    ("task", "lr"),
    [
        ("cola", 1e-3),
        ("mrpc", 3e-3),
        ("qnli", 1e-3),
        ("rte", 3e-3),
        ("sst2", 3e-3),
        ("mnli", 3e-4),
        ("qqp", 3e-4),
    ],
)
def test_bart_lst_uses_the_papers_per_task_learning_rates(task, lr):
    config = TrainConfig.from_flat(task=task, backbone="facebook/bart-large")
    assert config.resolved_lr("bart") == lr
    assert config.resolved_lr("t5") == 3e-3  # other backbones keep LST's 3e-3
    assert TrainConfig.from_flat(task=task, lr=0.01).resolved_lr("bart") == 0.01  # a given rate wins


@pytest.mark.parametrize("head", [CLS, S2S])
def test_bart_fisher_initialisation_runs_and_copies_backbone_rows(head):
    backbone = tiny("bart", head)
    data = batch(head)
    model = get_ladder_model(
        backbone, LadderConfig(reduction_factor=4, init="fisher", fisher_samples=2), [data]
    )
    side = (
        model.side.stacks["encoder"].trunk.layers[0].fc1.weight
    )  # (16, 8): rows and columns of backbone fc1
    full = backbone.model.encoder.layers[0].fc1.weight  # (64, 32)
    # every side row is a backbone row restricted to kept columns: each of its values occurs in that backbone row
    for row in side:
        assert any(torch.isin(row, full[i]).all() for i in range(full.shape[0]))


@pytest.mark.parametrize("method", ["full", "lora", "adapter", "bitfit"])
def test_bart_baselines_of_table2_train(method):
    """Table 2's comparison methods run on BartForSequenceClassification and train only what they should."""
    model = prepare_baseline(tiny("bart", CLS), method)
    data = batch(CLS)
    model(**data).loss.backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if method == "adapter":
        assert all(".adapter." in n or "norm" in n or "classification_head" in n for n in trained)


@pytest.mark.parametrize(("name", "head"), CASES)
def test_family_side_dropouts_at_zero_leave_nothing_random_in_the_side(name, head):
    """``side_dropout=0`` (and ``side_attention_dropout=0`` where the family has an attention-only dropout) reach
    every dropout of every family's side trunk: in train mode two seeds give the same side outputs."""
    try:
        config = LadderConfig(reduction_factor=4, side_dropout=0.0, side_attention_dropout=0.0)
        model = get_ladder_model(tiny(name, head), config)
    except ConfigError as e:  # T5: dropout_rate drives attention dropout too, so side_dropout alone covers it
        assert "no attention-only dropout" in str(e)
        model = get_ladder_model(tiny(name, head), LadderConfig(reduction_factor=4, side_dropout=0.0))
    model.train()
    outputs = []
    stacks = list(model.side.stacks.values())
    for seed in (1, 2):
        seen = []
        hooks = [
            s.layers[-1].register_forward_hook(lambda m, a, out, seen=seen: seen.append(out)) for s in stacks
        ]
        torch.manual_seed(seed)
        model(**batch(head))
        for hook in hooks:
            hook.remove()
        outputs.append([o[0] if isinstance(o, tuple | list) else o for o in seen])
    assert len(outputs[0]) == len(stacks)
    for a, b in zip(*outputs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "head"), CASES)
def test_family_side_trunk_dropouts_draw_laddertunes_cpu_masks(name, head, monkeypatch):
    """Every dropout of every family's side trunk (modules, functional calls, attention kernels) draws its CPU
    masks from :mod:`laddertune.core.cpu_dropout`: torch's ``bernoulli_`` runs only for the task head's own
    dropout modules (outside the trunk), and for the trunk's too once the switch is off."""
    fields = {}
    for field in ("side_dropout", "side_attention_dropout"):
        try:  # Llama has no hidden-state dropout, T5 no attention-only one
            get_ladder_model(tiny(name, head), LadderConfig(reduction_factor=4, **{field: 0.1}))
            fields[field] = 0.1
        except ConfigError:
            pass
    model = get_ladder_model(tiny(name, head), LadderConfig(reduction_factor=4, **fields)).train()
    head_calls = []  # the task head's dropout modules run outside the trunk (RoBERTa's twice)
    for m in (getattr(model.side, "head", None) or torch.nn.Module()).modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0:
            m.register_forward_hook(lambda *_: head_calls.append(1))

    def bernoulli_calls() -> int:
        head_calls.clear()
        with torch.profiler.profile() as prof:
            model(**batch(head)).loss.backward()
        return sum(e.count for e in prof.key_averages() if e.key == "aten::bernoulli_")

    assert bernoulli_calls() == len(head_calls)
    monkeypatch.setattr(cpu_dropout, "ENABLED", False)
    assert bernoulli_calls() > len(head_calls)
