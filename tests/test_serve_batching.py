"""The server's decoding loop over rows of different side networks (laddertune/serve/batching.py): each row's answer
is its own side network's ``generate()``, greedy and seeded sampling alike, while rows of other side networks join
and leave around it; a row that fails inside the model fails alone."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import VOCAB, tiny_backbone
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune import LadderConfig, get_ladder_model
from laddertune.serve import kv
from laddertune.serve.batching import MixedBatch
from laddertune.serve.sampling import Sampler, Sampling

POISON = VOCAB - 1  # a token id whose forward the poisoned tests make fail


class Side:
    def __init__(self, key: str, model) -> None:
        self.key, self.model = key, model


class Row:
    def __init__(self, side: Side, prompt: list[int], length: int, sampling: Sampling | None = None) -> None:
        self.side, self.prompt, self.length = side, prompt, length
        self.sampler = Sampler(sampling or Sampling())
        self.out: list[int] = []


@pytest.fixture(scope="module")
def sides() -> list[Side]:
    backbone = tiny_backbone("llama", "causal_lm")
    out = []
    for k in range(3):
        model = get_ladder_model(backbone, LadderConfig(reduction_factor=4)).eval()
        g = torch.Generator().manual_seed(100 + k)
        # away from the zero up-projection, so that the side networks answer differently
        with torch.no_grad():
            for p in model.side.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        out.append(Side(f"side{k}", model))
    return out


def reference(row: Row, **sampling) -> list[int]:
    ids = torch.tensor([row.prompt])
    out = row.side.model.generate(
        ids, torch.ones_like(ids), max_new_tokens=row.length, eos_token_id=None, pad_token_id=0, **sampling
    )
    return out[0, len(row.prompt) :].tolist()


def drive(batch: MixedBatch, pending: list[Row], rng: random.Random) -> list:
    """Run rows to their length, a few joining before each step; returns the failures."""
    pending, nxt, failures = list(pending), {}, []

    def pick(rows, logits):
        for r, lg in zip(rows, logits, strict=True):
            nxt[id(r)] = r.sampler(lg, r.prompt + r.out)

    while pending or len(batch):
        join = [pending.pop(0) for _ in range(min(len(pending), rng.randint(0, 3)))]
        if join:
            added, logits, failed = batch.add(join)
            failures += failed
            if added:
                pick(added, logits)
        if not len(batch):
            continue
        for r in batch.rows:
            r.out.append(nxt[id(r)])
        batch.remove([r for r in batch.rows if len(r.out) >= r.length])
        if len(batch):
            logits, failed = batch.step([nxt[id(r)] for r in batch.rows])
            failures += failed
            if len(batch):
                pick(batch.rows, logits)
    return failures


def test_rows_of_three_side_networks_answer_as_their_own_generate(sides):
    rng = random.Random(0)
    rows = [
        Row(
            rng.choice(sides),
            [rng.randrange(3, VOCAB - 1) for _ in range(rng.randint(1, 12))],
            rng.randint(1, 10),
        )
        for _ in range(30)
    ]
    assert drive(MixedBatch(), rows, rng) == []
    assert [r.out for r in rows] == [reference(r, do_sample=False) for r in rows]
    # the side networks do answer differently: one prompt, three answers
    prompt = [5, 9, 11]
    answers = {tuple(reference(Row(s, prompt, 6), do_sample=False)) for s in sides}
    assert len(answers) == 3


def test_seeded_sampling_draws_what_generate_draws(sides):
    settings = [Sampling(True, 0.7, 0.9, None, None, 1), Sampling(True, 1.3, 1.0, 5, None, 5)]
    rows = [Row(sides[i % 3], [5 + i, 9, 11, 40 - i], 12, settings[i % 2]) for i in range(4)]
    rows.append(Row(sides[1], [7, 8], 12))  # a greedy row in the same batch
    assert drive(MixedBatch(), rows, random.Random(1)) == []
    for r in rows[:4]:
        s = r.sampler.settings
        torch.manual_seed(s.seed)
        assert r.out == reference(r, do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    assert rows[4].out == reference(rows[4], do_sample=False)


@pytest.mark.parametrize("where", ["prefill", "step"])
def test_a_row_that_fails_inside_the_model_fails_alone(sides, monkeypatch, where):
    """The poisoned row's forward raises (in its prefill, or at the step that feeds it POISON); the batch is
    retried row by row, the poisoned row leaves with its error, every other row still answers as generate()."""
    runner = type(sides[0].model)
    real = runner.run_backbone

    def poisoned(self, stack, input_ids, **kw):
        if (input_ids == POISON).any():
            raise RuntimeError("poisoned input")
        return real(self, stack, input_ids, **kw)

    monkeypatch.setattr(runner, "run_backbone", poisoned)
    rng = random.Random(2)
    rows = [Row(sides[i % 3], [rng.randrange(3, VOCAB - 1) for _ in range(3 + i)], 6) for i in range(6)]
    bad = rows[2]
    if where == "prefill":
        bad.prompt = [4, POISON, 7]
    else:  # its second token is POISON, whatever the model says
        real_sampler = bad.sampler
        bad.sampler = lambda logits, ids: (
            POISON if len(ids) == len(bad.prompt) + 1 else real_sampler(logits, ids)
        )
    failures = drive(MixedBatch(), rows, rng)
    assert [(row, str(e)) for row, e in failures] == [(bad, "poisoned input")]
    monkeypatch.setattr(runner, "run_backbone", real)
    for r in rows:
        if r is not bad:
            assert r.out == reference(r, do_sample=False)


def test_cache_surgery_keeps_rows_and_columns_apart():
    """left_pad + concat + select + drop_left: each row's keys come back where they were."""
    from transformers.cache_utils import DynamicCache

    def cache(rows: int, length: int, start: float) -> DynamicCache:
        k = torch.arange(rows * length, dtype=torch.float32).reshape(rows, 1, length, 1) + start
        return DynamicCache(ddp_cache_data=[(k, -k)])

    a, b = cache(2, 3, 0.0), cache(1, 5, 100.0)
    joined = kv.concat(kv.left_pad(a, 2), b)  # (3, 1, 5, 1)
    keys = joined.layers[0].keys[:, 0, :, 0]
    assert keys.tolist() == [[0, 0, 0, 1, 2], [0, 0, 3, 4, 5], [100, 101, 102, 103, 104]]
    picked = kv.drop_left(kv.select(joined, torch.tensor([1, 0])), 2)
    assert picked.layers[0].keys[:, 0, :, 0].tolist() == [[3, 4, 5], [0, 1, 2]]
    assert picked.layers[0].values[:, 0, :, 0].tolist() == [[-3, -4, -5], [0, -1, -2]]
    kv.truncate(joined, 4)
    assert kv.length(joined) == 4
