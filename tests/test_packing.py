"""Packing: whole rows per sequence, positions restart, no attention or label leakage (packed loss = unpacked)."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, tiny_backbone

from laddertune.data import GenerativeCollator, block_causal_mask, pack_rows
from laddertune.data.packing import sequence_ids
from laddertune.errors import ConfigError

X = -100


def _rows(lengths: list[int], seed: int = 0) -> list[dict]:
    """Causal rows of random ids: the first half of each row is prompt (-100), the rest learned (a row of 1 token
    learns it)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [X] * (n // 2) + ids[n // 2 :], "location": f"r{len(rows)}"})
    return rows


def test_pack_rows_best_fit_and_fields():
    rows = _rows([5, 3, 2, 6, 4])
    packed = pack_rows(rows, max_length=8)
    # longest first, each into the fullest sequence it fits: 6+2, 5+3, 4
    assert [p["num_rows"] for p in packed] == [2, 2, 1]
    assert packed[0]["input_ids"] == rows[3]["input_ids"] + rows[2]["input_ids"]
    assert packed[0]["position_ids"] == [0, 1, 2, 3, 4, 5, 0, 1]
    # each row's first label is not predicted from the row before it
    assert packed[0]["labels"] == [X, *rows[3]["labels"][1:], X, *rows[2]["labels"][1:]]
    assert packed[1]["input_ids"] == rows[0]["input_ids"] + rows[1]["input_ids"]
    assert packed[2]["position_ids"] == [0, 1, 2, 3]
    assert sorted(t for p in packed for t in p["input_ids"]) == sorted(
        t for r in rows for t in r["input_ids"]
    )


def test_pack_rows_refuses_rows_that_do_not_fit():
    with pytest.raises(ConfigError, match=r"r0: a row of 9 tokens cannot be packed into 8"):
        pack_rows(_rows([9]), max_length=8)
    with pytest.raises(ConfigError, match=r"packing needs causal training rows"):
        pack_rows([{"input_ids": [1, 2], "prompt_length": 2}], max_length=8)


def test_packed_batch_and_block_mask():
    packed = pack_rows(_rows([3, 2, 4]), max_length=5)  # 4 | 3+2
    batch = GenerativeCollator(0)(packed)
    assert "attention_mask" not in batch  # transformers finds the rows from position_ids
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]  # padding: a block of its own
    assert batch["labels"][0, 4].item() == X and batch["input_ids"][0, 4].item() == 0
    assert sequence_ids(batch["position_ids"]).tolist() == [[0, 0, 0, 0, 1], [0, 0, 0, 1, 1]]
    mask = block_causal_mask(batch["position_ids"])[1, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    additive = block_causal_mask(batch["position_ids"], torch.float32)
    assert additive.shape == (2, 1, 5, 5) and additive[1, 0, 3, 2] == torch.finfo(torch.float32).min
    assert additive[1, 0, 4, 3] == 0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_loss_equals_unpacked_loss(family, attn):
    model = tiny_backbone(family, "causal_lm").eval()  # eval: GPT-2's dropout off
    model.set_attn_implementation(attn)
    rows = _rows([7, 3, 5, 9, 2, 6, 1, 4], seed=3)
    with torch.no_grad():
        unpacked = model(**GenerativeCollator(0)(rows)).loss  # mean over every learned token of the batch
        packed_rows = pack_rows(rows, max_length=12)
        assert len(packed_rows) < len(rows)
        batch = GenerativeCollator(0)(packed_rows)
        packed = model(**batch, use_cache=False).loss
        explicit_mask = block_causal_mask(batch["position_ids"], None if attn == "sdpa" else torch.float32)
        explicit = model(**batch, attention_mask=explicit_mask).loss  # a 4D mask works with the cache on, too
        leaky = model(**batch).loss  # use_cache defaults on: transformers skips packing detection
    torch.testing.assert_close(packed, unpacked, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explicit, unpacked, rtol=1e-5, atol=1e-6)
    assert (
        abs(leaky.item() - unpacked.item()) > 1e-3
    )  # documents why use_cache=False (or the 4D mask) is needed


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_ladder_model_on_packed_rows_equals_unpacked(family):
    """The side network is the backbone's own class (LlamaModel, GPT2Model) and gets the same positions: packing
    leaks nothing through either network, with the final shortcut and a trained up-projection, in loss and
    gradients, and with the chunked loss."""
    from laddertune import LadderConfig, get_ladder_model

    torch.manual_seed(0)
    model = get_ladder_model(tiny_backbone(family, "causal_lm"), LadderConfig(reduction_factor=4)).eval()
    with torch.no_grad():
        model.side.up.weight.normal_(std=0.05)
    rows = _rows([7, 3, 5, 9, 2, 6, 1, 4], seed=3)
    unpacked = model(**GenerativeCollator(0)(rows))
    unpacked.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.side.named_parameters() if p.grad is not None}
    model.zero_grad()
    batch = GenerativeCollator(0)(pack_rows(rows, max_length=12))
    packed = model(**batch)
    packed.loss.backward()
    torch.testing.assert_close(packed.loss, unpacked.loss, rtol=1e-5, atol=1e-6)
    for n, p in model.side.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)
    model.ladder_config.loss_chunk_size = 4
    torch.testing.assert_close(model(**batch).loss, unpacked.loss, rtol=1e-5, atol=1e-6)
