"""Baselines on tiny random models: who trains, what changes, golden parameter counts, layer freezing."""

import json
import re

import pytest
import torch
import transformers as tf

from laddertune.baselines import (
    BASELINES,
    AdapterOptions,
    LoraOptions,
    PromptOptions,
    QLoraOptions,
    count_trainable,
    prepare_baseline,
)
from laddertune.errors import ConfigError
from laddertune.methods import method_names

# d=16: adapter bottleneck 4
TINY_OPTIONS = {
    "lora": LoraOptions(lora_rank=2),
    "adapter": AdapterOptions(adapter_reduction=4),
    "prompt": PromptOptions(prompt_length=4),
}


def tiny(method: str):
    """The tiny settings of ``method`` (None: its defaults)."""
    return TINY_OPTIONS.get(method)


def t5():
    cfg = tf.T5Config(
        vocab_size=64, d_model=16, d_ff=32, d_kv=4, num_heads=4, num_layers=2, num_decoder_layers=2,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return tf.T5ForConditionalGeneration(cfg)


def bert(num_labels=2):
    cfg = tf.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32
    )
    cfg.num_labels = num_labels
    return tf.BertForSequenceClassification(cfg)


def llama():
    cfg = tf.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=64,
    )  # fmt: skip
    return tf.LlamaForCausalLM(cfg)


def gpt2():
    cfg = tf.GPT2Config(
        vocab_size=64, n_embd=16, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, num_labels=2,
    )  # fmt: skip
    return tf.GPT2ForSequenceClassification(cfg)


def batch(kind):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (2, 7), generator=g)  # no pad id (0) inside
    mask = torch.ones_like(ids)
    if kind == "t5":
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(1, 64, (2, 3), generator=g)}
    if kind == "llama":
        return {"input_ids": ids, "attention_mask": mask, "labels": ids}
    if kind == "bert_reg":
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0.5, -1.0])}
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}


MODELS = {"t5": t5, "bert_cls": bert, "bert_reg": lambda: bert(1), "llama": llama, "gpt2": gpt2}


def make(kind):
    torch.manual_seed(0)
    return MODELS[kind]()


def is_norm(name):
    owner = name.split(".")[-2]
    return "norm" in owner.lower() or owner.startswith("ln_")


def is_head(name):
    # the new classification head; PEFT trains a copy under modules_to_save and freezes the original
    return (
        name.startswith(("classifier.", "score.")) or ".modules_to_save." in name
    ) and "original_module" not in name


EXPECTED = {  # which parameter names each method must train, from the names alone
    "full": lambda n: True,
    "lora": lambda n: "lora_" in n or is_head(n),
    "adapter": lambda n: ".adapter." in n or is_norm(n) or is_head(n),
    "bitfit": lambda n: n.endswith(".bias") or is_head(n),
    "prompt": lambda n: n.startswith("prompt_encoder.") or is_head(n),
}


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("method", BASELINES)
def test_one_training_step_touches_only_the_methods_parameters(method, kind):
    model = prepare_baseline(make(kind), method, tiny(method))
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == {n for n in params if EXPECTED[method](n)}
    if kind != "t5" and kind != "llama":
        assert any(is_head(n) for n in trainable), "the new classification head must train"
    before = {n: p.detach().clone() for n, p in params.items()}

    model.train()
    out = model(**batch(kind))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert {n for n, p in params.items() if p.grad is not None} == trainable
    torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01).step()

    for n, p in params.items():
        if n not in trainable:
            assert torch.equal(p, before[n]), f"frozen {n} changed"
    assert any(not torch.equal(params[n], before[n]) for n in trainable)


@pytest.mark.parametrize("kind", ["t5", "bert_cls", "llama", "gpt2"])
def test_adapters_start_as_identity(kind):
    # no_grad on both sides: with grad on, CPU SDPA picks its kernel by requires_grad, which the method changes
    model = make(kind).eval()
    b = batch(kind)
    with torch.no_grad():
        ref = model(**b).logits
        model = prepare_baseline(model, "adapter", tiny("adapter"))
        assert any(".adapter." in n for n, _ in model.named_parameters())
        assert torch.equal(model(**b).logits, ref)


def test_bitfit_adds_zero_biases_to_t5_and_keeps_its_output():
    model = make("t5").eval()
    b = batch("t5")
    with torch.no_grad():
        ref = model(**b).logits
    assert not any(n.endswith(".bias") for n, _ in model.named_parameters())
    model = prepare_baseline(model, "bitfit", tiny("bitfit"))
    biases = {n: p for n, p in model.named_parameters() if n.endswith(".bias")}
    # encoder layer: q k v o wi wo = 6; decoder layer: self q k v o, cross q k v o, wi wo = 10
    assert len(biases) == 2 * 6 + 2 * 10
    assert all(torch.count_nonzero(p) == 0 for p in biases.values())
    with torch.no_grad():  # F.linear with a bias may take another kernel (addmm): equal up to rounding
        torch.testing.assert_close(model(**b).logits, ref, rtol=0, atol=1e-6)


# Golden trainable counts, by hand. d=16, heads 4 x d_kv 4 (inner 16), d_ff / intermediate 32, 2 (+2) layers.
#   LoRA r=2 on a 16->16 projection: A 2*16 + B 16*2 = 64.
#   Adapter 16->4->16: down 16*4+4 = 68, up 4*16+16 = 80 -> 148; two per layer.
#   BERT classifier 16*2+2 = 34.
GOLDEN = [
    # BERT LoRA on query,value: 2 layers * 2 * 64 = 256, + classifier 34
    ("bert_cls", "lora", 290),
    # BERT adapters 4 * 148 = 592; LayerNorms (weight+bias 32): embeddings 1 + 2 per layer = 5 * 32 = 160; + 34
    ("bert_cls", "adapter", 786),
    # BERT biases: embeddings LN 16; per layer q k v 48, attn out 16, attn LN 16, intermediate 32, out 16,
    # out LN 16 = 144, * 2 = 288; pooler 16; + classifier 34 (weight and bias: new head)
    ("bert_cls", "bitfit", 354),
    # T5 LoRA on q,v of self- and cross-attention: encoder 2 layers * 2 * 64 + decoder 2 layers * 4 * 64
    ("t5", "lora", 768),
    # T5 adapters 8 * 148 = 1184; RMS norms (weight 16): 2 per encoder layer, 3 per decoder layer, 2 final = 12
    ("t5", "adapter", 1184 + 12 * 16),
    # T5 zero biases: encoder layer q k v o 64 + wi 32 + wo 16 = 112; decoder layer 64 + 64 + 48 = 176
    ("t5", "bitfit", 2 * 112 + 2 * 176),
    # 4 prompt vectors of width 16
    ("t5", "prompt", 64),
    # Llama zero biases: q 16, k 8, v 8 (2 kv heads of 4), o 16, gate 32, up 32, down 16 = 128 per layer
    ("llama", "bitfit", 256),
]


@pytest.mark.parametrize("kind,method,expected", GOLDEN)
def test_golden_trainable_counts(kind, method, expected):
    assert count_trainable(prepare_baseline(make(kind), method, tiny(method)))[0] == expected


def test_prompt_starts_from_the_first_vocabulary_embeddings():
    backbone = make("t5")
    first = backbone.get_input_embeddings().weight[:4].detach().clone()
    model = prepare_baseline(backbone, "prompt", tiny("prompt"))
    prompt = model.prompt_encoder[model.active_adapter].embedding.weight
    assert prompt.shape == (4, 16) and torch.equal(prompt, first)


@pytest.mark.parametrize("method", ["lora", "prompt", "adapter"])
def test_generate_is_available_for_t5(method):
    model = prepare_baseline(make("t5"), method, tiny(method)).eval()
    out = model.generate(input_ids=batch("t5")["input_ids"], max_new_tokens=2)
    assert out.shape[0] == 2


def global_layer(name):
    """Layer index in freezing order for a T5 parameter name (encoder 0-1, decoder 2-3), None outside layers."""
    m = re.search(r"(encoder|decoder)\.block\.(\d+)\.", name)
    return None if m is None else int(m.group(2)) + (2 if m.group(1) == "decoder" else 0)


@pytest.mark.parametrize("method", ["full", "lora", "adapter", "bitfit"])
def test_freeze_layers_on_t5(method):
    counts = []
    for n in range(4):
        model = prepare_baseline(make("t5"), method, tiny(method), freeze_layers=n)
        for name, p in model.named_parameters():
            if p.requires_grad:
                layer = global_layer(name)
                assert layer is None or layer >= n, f"{name} trains with freeze_layers={n}"
                if n > 0:
                    assert "shared" not in name and "embed" not in name
        counts.append(count_trainable(model)[0])
    assert counts == sorted(set(counts), reverse=True), counts  # strictly decreasing
    with pytest.raises(ConfigError, match="only 4 layers"):
        prepare_baseline(make("t5"), method, tiny(method), freeze_layers=5)
    with pytest.raises(ConfigError):  # T5: nothing after the 4th layer is trainable (the LM head is tied)
        prepare_baseline(make("t5"), method, tiny(method), freeze_layers=4)


def test_freeze_layers_golden_counts():
    # LoRA r=2, T5: freezing 3 of 4 layers leaves decoder layer 1 only: 4 projections * 64
    assert count_trainable(prepare_baseline(make("t5"), "lora", tiny("lora"), freeze_layers=3))[0] == 256
    # freezing the encoder (2) leaves both decoder layers: 2 * 4 * 64 (not the decoder's first layers, as
    # PEFT's per-stack layers_to_transform would)
    assert count_trainable(prepare_baseline(make("t5"), "lora", tiny("lora"), freeze_layers=2))[0] == 512
    # full fine-tuning of BERT with all layers frozen: pooler 16*16+16 and classifier 34 remain
    assert count_trainable(prepare_baseline(make("bert_cls"), "full", freeze_layers=2))[0] == 272 + 34


def test_errors():
    with pytest.raises(ConfigError, match="get_ladder_model"):
        prepare_baseline(make("bert_cls"), "lst")
    with pytest.raises(ConfigError, match="full, lora, adapter, bitfit, prompt"):
        prepare_baseline(make("bert_cls"), "ia3")
    with pytest.raises(ConfigError, match="freeze_layers is an option of method full.*not of method prompt"):
        prepare_baseline(make("t5"), "prompt", tiny("prompt"), freeze_layers=1)
    with pytest.raises(ConfigError, match="vocabulary"):
        prepare_baseline(make("t5"), "prompt")  # 100 prompt vectors > 64 tokens
    with pytest.raises(ConfigError, match="no module matches"):
        prepare_baseline(make("bert_cls"), "lora", lora_targets=("nonexistent",))
    with pytest.raises(ConfigError, match="rank is not an option of any method"):
        prepare_baseline(make("bert_cls"), "lora", rank=4)
    with pytest.raises(ConfigError, match="takes LoraOptions"):
        prepare_baseline(make("bert_cls"), "lora", AdapterOptions())
    for cls, bad in ((LoraOptions, {"lora_rank": 0}), (LoraOptions, {"lora_dropout": 1.0}),
                     (LoraOptions, {"freeze_layers": -1}), (AdapterOptions, {"adapter_reduction": 2.5}),
                     (LoraOptions, {"lora_targets": []}), (PromptOptions, {"prompt_length": True}),
                     (LoraOptions, {"lora_alpha": 0})):  # fmt: skip
        with pytest.raises(ConfigError):
            cls(**bad)


def test_options_round_trip_and_methods():
    options = LoraOptions(lora_targets="q, k,v", freeze_layers=6)
    assert options.lora_targets == ("q", "k", "v")
    assert LoraOptions(**json.loads(json.dumps(options.to_dict()))) == options
    assert QLoraOptions().lora_rank == 16 and LoraOptions().lora_rank == 32  # each method's own default
    assert method_names()[0] == "lst" and set(BASELINES) < set(method_names())


def test_full_and_explicit_lora_need_no_family_entry():
    cfg = tf.RobertaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32
    )
    assert count_trainable(prepare_baseline(tf.RobertaForSequenceClassification(cfg), "full"))[0] > 0
    # LoRA r=2 on query,value 256 + RoBERTa's head (dense 16*16+16, out 16*2+2) 306
    lora = prepare_baseline(
        tf.RobertaForSequenceClassification(cfg), "lora", tiny("lora"), lora_targets="query,value"
    )
    assert count_trainable(lora)[0] == 256 + 306
    with pytest.raises(ConfigError, match="not supported"):
        prepare_baseline(tf.RobertaForSequenceClassification(cfg), "adapter")
