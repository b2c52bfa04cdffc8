"""The tap cache: cached runs equal uncached ones, the cache key's hits and misses, layer subsets, damage rebuilt.

Tiny random backbones (test_trainer's BERT, Llama, T5 folders) on the learnable RTE-shaped data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_trainer import config, one_thread, save_backbone, write_data  # noqa: F401 (one_thread: autouse)

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_tokenizer
from laddertune.data import get_task, make_collator
from laddertune.errors import ConfigError
from laddertune.io import load_tensors
from laddertune.taps import open_tap_cache
from laddertune.training import train
from laddertune.training.build import load_task_backbone
from laddertune.training.config import TrainConfig

FORMATS = {"bert": "classification", "llama": "causal", "t5": "text2text"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("taps")
    return {
        **{f: save_backbone(root / f, f) for f in FORMATS},
        "data": write_data(root / "data", n_train=20, n_val=8),
    }


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def side_weights(out: Path) -> dict:
    return load_tensors(out / "checkpoint-last" / "ladder_model.safetensors")


@pytest.mark.parametrize("family", list(FORMATS))
def test_cached_run_equals_uncached_run(assets, tmp_path, family):
    kw = {"backbone": assets[family], "format": FORMATS[family], "epochs": 2, "side_layers": [0, 1]}
    plain = train(config(assets, tmp_path / "plain", **kw))
    cached = train(config(assets, tmp_path / "cached", tap_cache=str(tmp_path / "cache"), **kw))
    losses = [r["loss"] for r in records(tmp_path / "plain", "train")]
    cached_losses = [r["loss"] for r in records(tmp_path / "cached", "train")]
    # Same losses and scores. Not bit-identical in general: the cache is built in its own batches, and a row's
    # backbone states can differ in the last bits with the batch's padded length (other matmul shapes); 1e-5 is
    # float32 rounding, far below any difference a wrong tap would make.
    assert cached_losses == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert cached["metrics"]["validation"][-1]["metrics"] == plain["metrics"]["validation"][-1]["metrics"]
    a, b = side_weights(tmp_path / "plain"), side_weights(tmp_path / "cached")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)
    built = [r for r in records(tmp_path / "cached", "tap_cache") if "built" in r]
    assert built[0]["built"] is True and built[0]["bytes"] > 0


def cache_for(
    assets,
    tmp_path,
    *,
    backbone="bert",
    seed=0,
    side_layers=None,
    dtype="float32",
    max_length=128,
    n=None,
    fmt="classification",
    tokenizer=None,
):
    spec = get_task("rte")
    tok = tokenizer or load_tokenizer(assets[backbone])
    bb = load_task_backbone(assets[backbone], spec, "sequence_classification", tok)
    if seed:
        with torch.no_grad():
            next(bb.parameters()).add_(seed)
    model = get_ladder_model(bb, LadderConfig(side_layers=side_layers, reduction_factor=4))
    rows = [json.loads(x) for x in (Path(assets["data"]) / "rte" / "train.jsonl").read_text().splitlines()][
        :n
    ]
    examples = [{"text": r["sentence1"], "text_pair": r["sentence2"], "label": r["label"]} for r in rows]
    collate = make_collator(tok, fmt=fmt, spec=spec, max_length=max_length)
    messages = []
    cache = open_tap_cache(
        tmp_path / "cache",
        model,
        tok,
        examples,
        collate,
        max_length=max_length,
        fmt=fmt,
        dtype=dtype,
        batch_size=8,
        notify=messages.append,
    )
    return cache, messages, model, collate, examples


def test_hit_and_miss_for_each_key_field(assets, tmp_path):
    first, messages, *_ = cache_for(assets, tmp_path)
    assert first.built and "writing about" in messages[0]
    again, _, *_ = cache_for(assets, tmp_path)
    assert not again.built and again.path == first.path
    misses = {
        "backbone weights": {"seed": 1},
        "data content": {"n": 10},
        "max length": {"max_length": 64},
        "dtype": {"dtype": "bfloat16"},
    }
    paths = {first.path}
    for what, kw in list(misses.items())[:4]:
        cache, *_ = cache_for(assets, tmp_path, **kw)
        assert cache.built, what
        assert cache.path not in paths, what
        paths.add(cache.path)
    tok = load_tokenizer(assets["bert"])
    tok.truncation_side = "left"  # another tokenizer setting: other ids possible, so another entry
    cache, *_ = cache_for(assets, tmp_path, tokenizer=tok)
    assert cache.built and cache.path not in paths


def test_kept_layer_subset_reuses_and_superset_misses(assets, tmp_path):
    small, *_ = cache_for(assets, tmp_path, side_layers=[1])
    assert small.built and small.layers == {"body": [1]}
    full, *_ = cache_for(assets, tmp_path)  # all layers: not in the [1] entry, so a new one
    assert full.built and full.layers == {"body": [0, 1]}
    sub, *_ = cache_for(assets, tmp_path, side_layers=[0])
    assert not sub.built and sub.path == full.path


def test_cached_taps_equal_the_backbone_taps(assets, tmp_path):
    from laddertune.core.taps import collect_taps

    cache, _, model, collate, examples = cache_for(assets, tmp_path)
    batch = collate(examples[3:9])
    want = collect_taps(model, **{k: v for k, v in batch.items() if k != "labels"})
    got = cache.taps(batch, {"body": [0, 1]})
    mask = batch["attention_mask"].bool()
    for t, tensor in want["body"].items():
        torch.testing.assert_close(got["body"][t][mask], tensor[mask], rtol=1e-5, atol=1e-6)
        assert not got["body"][t][~mask].any()  # padding holds zeros


def test_damaged_shard_is_detected_and_rebuilt(assets, tmp_path):
    first, *_ = cache_for(assets, tmp_path)
    shard = next(first.path.glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    again, *_ = cache_for(assets, tmp_path)
    assert again.built  # the flipped byte failed SHA256SUMS: removed and built again
    shard = next(again.path.glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    third, *_ = cache_for(assets, tmp_path)
    assert third.built
    # a build killed part-way leaves only a hidden .building folder, never an entry; the next build removes it
    stale = tmp_path / "cache" / f".building-{third.path.name}-99999"
    stale.mkdir()
    shutil.rmtree(third.path)
    fourth, *_ = cache_for(assets, tmp_path)
    assert fourth.built and not stale.exists()


def test_dropout_refused_and_bad_settings(assets, tmp_path):
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig(task="rte", tap_cache=str(tmp_path), backbone_dropout=True)
    with pytest.raises(ConfigError, match="LST only"):
        TrainConfig(task="rte", tap_cache=str(tmp_path), method="full")
    with pytest.raises(ConfigError, match="tap_dtype"):
        TrainConfig(task="rte", tap_dtype="int8")
    spec = get_task("rte")
    tok = load_tokenizer(assets["bert"])
    model = get_ladder_model(
        load_task_backbone(assets["bert"], spec, "sequence_classification", tok),
        LadderConfig(backbone_dropout=True),
    )
    with pytest.raises(ConfigError, match="dropout"):
        open_tap_cache(tmp_path / "c", model, tok, [], None, max_length=16, fmt="classification")


def test_not_enough_disk_is_one_line_error(assets, tmp_path, monkeypatch):
    import laddertune.taps.store as store

    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 9, 1))
    with pytest.raises(ConfigError, match="not enough disk") as e:
        cache_for(assets, tmp_path)
    assert "\n" not in str(e.value)
    assert not any((tmp_path / "cache").iterdir())


def test_cached_training_steps_never_run_the_backbone(assets, tmp_path, monkeypatch):
    import transformers

    calls = {"train": 0}
    original = transformers.BertModel.forward

    def counting(self, *args, **kwargs):
        if (
            not torch.is_inference_mode_enabled()
        ):  # evaluation runs under inference_mode; training steps do not
            calls["train"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.BertModel, "forward", counting)
    cache = str(tmp_path / "cache")
    train(config(assets, tmp_path / "a", tap_cache=cache, epochs=2))
    built = calls["train"]
    assert built == 2  # the build alone: 20 examples in batches of eval_batch_size 16; none in the 6 steps
    calls["train"] = 0
    train(config(assets, tmp_path / "b", tap_cache=cache, epochs=2, seed=1))
    assert calls["train"] == 0
