"""Importance scores: the vmapped Fisher equals a brute-force loop over unpadded batches of one."""

import logging
import re
from types import SimpleNamespace

import pytest
import torch
import transformers as tf
from torch import nn

from laddertune.errors import DataError
from laddertune.pruning.importance import fisher_importance, magnitude_importance

PAD = 0
LENGTHS = [5, 3, 5, 7, 5, 3, 7, 4]  # repeated lengths so that same-shape chunks are vmapped


def tiny(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "t5":
        cfg = tf.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                          decoder_start_token_id=PAD, pad_token_id=PAD)  # fmt: skip
        model = tf.T5ForConditionalGeneration(cfg)
    elif kind == "bert":
        cfg = tf.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=32, num_labels=3, pad_token_id=PAD)  # fmt: skip
        model = tf.BertForSequenceClassification(cfg)
    elif kind == "llama":  # grouped-query attention: 4 query heads, 2 key/value heads
        cfg = tf.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD)  # fmt: skip
        model = tf.LlamaForCausalLM(cfg)
    else:
        cfg = tf.GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=4, num_labels=2,
                            pad_token_id=PAD, bos_token_id=1, eos_token_id=1)  # fmt: skip
        model = tf.GPT2ForSequenceClassification(cfg)
    model.requires_grad_(False)  # frozen, as the LST backbone is
    return model


def make_examples(kind: str) -> list[dict[str, torch.Tensor]]:
    """Unpadded examples: what a batch of one holds."""
    g = torch.Generator().manual_seed(1)
    examples = []
    for i, n in enumerate(LENGTHS):
        ids = torch.randint(2, 64, (n,), generator=g)
        if kind == "t5":
            ex = {"input_ids": ids, "labels": torch.randint(2, 64, (1 + i % 2,), generator=g)}
        elif kind == "bert":
            ex = {
                "input_ids": ids,
                "token_type_ids": (torch.arange(n) >= n // 2).long(),
                "labels": torch.tensor(i % 3),
            }
        elif kind == "llama":
            labels = ids.clone()
            labels[: n // 2] = -100  # prompt tokens are not scored
            ex = {"input_ids": ids, "labels": labels}
        else:
            ex = {"input_ids": ids, "labels": torch.tensor(i % 2)}
        examples.append(ex)
    return examples


def pad(seqs: list[torch.Tensor], value: int, left: bool = False) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if left:
            out[i, out.shape[1] - len(s) :] = s
        else:
            out[i, : len(s)] = s
    return out


def collate(examples: list[dict[str, torch.Tensor]], left: bool = False) -> dict[str, torch.Tensor]:
    batch = {"attention_mask": pad([torch.ones_like(ex["input_ids"]) for ex in examples], 0, left)}
    for k in examples[0]:
        seqs = [ex[k] for ex in examples]
        if seqs[0].dim() == 0:
            batch[k] = torch.stack(seqs)
        else:
            batch[k] = pad(seqs, -100 if k == "labels" else PAD, left)
    return batch


def batches(examples, size: int = 3, left: bool = False):
    return [collate(examples[i : i + size], left) for i in range(0, len(examples), size)]


def brute_force_fisher(model: nn.Module, examples) -> dict[str, torch.Tensor]:
    """One backward per unpadded example, with plain autograd."""
    model.eval()
    params = dict(model.named_parameters())
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    model.requires_grad_(True)
    for ex in examples:
        model.zero_grad()
        model(**{k: v.unsqueeze(0) for k, v in ex.items()}).loss.backward()
        for n, p in params.items():
            fisher[n] += p.grad.square()
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return fisher


def vmapped_count(caplog) -> int:
    counts = [
        int(m.group(1)) for r in caplog.records if (m := re.search(r"\((\d+) vmapped\)", r.getMessage()))
    ]
    return counts[-1]


@pytest.mark.parametrize("kind,left", [("t5", False), ("bert", False), ("llama", True), ("gpt2", False)])
def test_vmap_fisher_equals_brute_force_loop(kind, left, caplog):
    model = tiny(kind)
    model.train()  # must be switched to eval for the pass and restored after
    examples = make_examples(kind)
    caplog.set_level(logging.INFO, logger="laddertune.pruning.importance")
    fisher = fisher_importance(model, batches(examples, left=left), num_examples=len(examples), chunk_size=2)

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "vmap fell back to the loop"
    assert model.config._attn_implementation == "sdpa"
    assert vmapped_count(caplog) >= 4
    assert model.training and all(not p.requires_grad and p.grad is None for p in model.parameters())
    expected = brute_force_fisher(model, examples)
    assert fisher.keys() == dict(model.named_parameters()).keys()
    for name, f in fisher.items():
        assert f.dtype == torch.float32 and f.shape == expected[name].shape
        torch.testing.assert_close(f, expected[name], rtol=1e-4, atol=1e-9, msg=name)
    assert sum(f.sum() for f in fisher.values()) > 0


def test_t5_target_mask_and_num_examples_cap():
    model = tiny("t5")
    examples = make_examples("t5")
    data = batches(examples, size=4)
    for b in data:  # a decoder mask instead of -100 padding: pad the labels with 0 under a zero mask
        b["decoder_attention_mask"] = (b["labels"] != -100).long()
        b["labels"] = b["labels"].masked_fill(b["labels"] == -100, PAD)
    fisher = fisher_importance(model, data, num_examples=5)
    expected = brute_force_fisher(model, examples[:5])
    for name, f in fisher.items():
        torch.testing.assert_close(f, expected[name], rtol=1e-4, atol=1e-9, msg=name)


def test_examples_without_gold_labels_are_skipped_and_none_is_an_error():
    model = tiny("llama")
    examples = make_examples("llama")
    empty = {"input_ids": examples[0]["input_ids"], "labels": torch.full_like(examples[0]["labels"], -100)}
    fisher = fisher_importance(model, batches([empty, *examples[:3]]), num_examples=3)
    expected = brute_force_fisher(model, examples[:3])
    torch.testing.assert_close(fisher["lm_head.weight"], expected["lm_head.weight"], rtol=1e-4, atol=1e-9)
    with pytest.raises(DataError, match="no example"):
        fisher_importance(model, batches([empty]))
    with pytest.raises(DataError, match="labels"):
        fisher_importance(model, [{"input_ids": examples[0]["input_ids"][None]}])


class BranchyModel(nn.Module):
    """Data-dependent Python control flow: vmap cannot run it, the loop can."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, input_ids, labels, attention_mask=None):
        x = nn.functional.one_hot(input_ids, 4).float().mean(1)
        if x.sum() > 0:  # .item() under the hood
            x = x * 2
        return SimpleNamespace(loss=nn.functional.cross_entropy(self.lin(x), labels))


def test_falls_back_to_the_loop_with_a_warning(caplog):
    torch.manual_seed(0)
    model = BranchyModel()
    examples = [
        {"input_ids": torch.tensor([i % 4, (i + 1) % 4]), "labels": torch.tensor(i % 3)} for i in range(6)
    ]
    fisher = fisher_importance(model, batches(examples, size=6), chunk_size=4)
    assert any("per-example loop" in r.getMessage() for r in caplog.records)
    expected = brute_force_fisher(model, examples)
    for name, f in fisher.items():
        torch.testing.assert_close(f, expected[name], rtol=1e-5, atol=1e-9)


def test_magnitude_is_abs_of_every_weight():
    model = tiny("gpt2")
    scores = magnitude_importance(model)
    assert scores.keys() == dict(model.named_parameters()).keys()
    for name, p in model.named_parameters():
        assert torch.equal(scores[name], p.detach().abs())
