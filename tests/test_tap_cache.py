"""The tap cache: cached runs equal uncached ones, the cache key's hits and misses, layer subsets, damage rebuilt.

Tiny random backbones (test_trainer's BERT, Llama, T5 folders) on the learnable RTE-shaped data.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_trainer import config, one_thread, save_backbone, write_data  # noqa: F401 (one_thread: autouse)

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_tokenizer
from laddertune.core.tap_projection import FINAL
from laddertune.data import get_task, make_collator
from laddertune.errors import ConfigError
from laddertune.io import CHECKSUMS_NAME, load_tensors, write_checksums
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
    # projected taps (a classifier's default is full width): the entry stores them d/r wide
    config = LadderConfig(side_layers=side_layers, reduction_factor=4, tap_projection="random")
    model = get_ladder_model(bb, config)
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
    # FINAL: the final shortcut's full-width input, beside the projected taps
    assert small.built and small.layers == {"body": [FINAL, 1]}
    full, *_ = cache_for(assets, tmp_path)  # all layers: not in the [1] entry, so a new one
    assert full.built and full.layers == {"body": [FINAL, 0, 1]}
    sub, *_ = cache_for(assets, tmp_path, side_layers=[0])
    assert not sub.built and sub.path == full.path


def test_cached_taps_equal_the_backbone_taps(assets, tmp_path):
    from laddertune.core.taps import collect_taps

    cache, _, model, collate, examples = cache_for(assets, tmp_path)
    batch = collate(examples[3:9])
    want = collect_taps(model, **{k: v for k, v in batch.items() if k != "labels"})
    got = cache.taps(batch, {"body": [FINAL, 0, 1]})
    mask = batch["attention_mask"].bool()
    # projected to d/r; full width
    assert got["body"][0].rows.shape[-1] == 8 and got["body"][FINAL].rows.shape[-1] == 32
    for t, tensor in want["body"].items():
        assert got["body"][t].rows.shape[0] == mask.sum()  # the real tokens' rows only
        padded = got["body"][t].padded()
        torch.testing.assert_close(padded[mask], tensor[mask], rtol=1e-5, atol=1e-6)
        assert not padded[~mask].any()  # padding holds zeros


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's list of memory mappings")
def test_the_rows_a_read_slices_are_views_into_the_shards_mapping(assets, tmp_path):
    """A cache holds each shard's taps as views into the file's memory mapping (safetensors >= 0.8 returns
    them): were they copies, opening an entry would load all of it."""
    cache, *_ = cache_for(assets, tmp_path)
    shards = {os.path.realpath(cache.path / s["file"]) for s in cache.manifest["shards"]}
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and os.path.realpath(fields[5]) in shards:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            mapped.append((lo, hi))
    assert cache._rows and mapped
    for rows in cache._rows.values():
        assert any(lo <= rows.data_ptr() < hi for lo, hi in mapped)


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


def _flip_shard(entry: Path) -> None:
    shard = next(entry.glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))


def _manifest(entry: Path, value) -> None:
    (entry / "manifest.json").write_text(json.dumps(value))
    write_checksums(entry)  # the list made to match: the manifest itself must still be checked


# (id, how the entry is damaged): each must be rebuilt, never served, never a traceback
DAMAGES = {
    "SHA256SUMS deleted, shard flipped": lambda e: ((e / CHECKSUMS_NAME).unlink(), _flip_shard(e)),
    "SHA256SUMS deleted, files intact": lambda e: (e / CHECKSUMS_NAME).unlink(),
    "manifest.json is []": lambda e: _manifest(e, []),
    "manifest.json is null": lambda e: _manifest(e, None),
    "manifest layers a list": lambda e: _manifest(
        e, {**json.loads((e / "manifest.json").read_text()), "layers": []}
    ),
    "manifest shards missing": lambda e: _manifest(
        e, {k: v for k, v in json.loads((e / "manifest.json").read_text()).items() if k != "shards"}
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_or_unverifiable_entry_is_rebuilt(assets, tmp_path, caplog, damage):
    first, *_ = cache_for(assets, tmp_path)
    DAMAGES[damage](first.path)
    with caplog.at_level("WARNING", logger="laddertune.taps"):
        again, *_ = cache_for(assets, tmp_path)
    assert again.built and again.path == first.path
    assert [r for r in caplog.records if "is damaged" in r.getMessage()]
    third, *_ = cache_for(assets, tmp_path)
    assert not third.built


def test_interrupted_build_leaves_nothing_and_the_next_run_builds(assets, tmp_path, monkeypatch):
    import laddertune.taps.store as store

    original, calls = store.collect_taps, {"n": 0}

    def interrupted(*args, **kwargs):  # Ctrl-C in the second backbone batch of the build
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "collect_taps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache_for(assets, tmp_path)
    assert not any((tmp_path / "cache").iterdir())  # no entry and no .building folder
    monkeypatch.setattr(store, "collect_taps", original)
    cache, *_ = cache_for(assets, tmp_path)
    assert cache.built and len(cache.index) == 20


def test_tokenizer_key_ignores_the_last_calls_padding_and_truncation(assets):
    from laddertune.taps.key import tokenizer_hash

    tok = load_tokenizer(assets["bert"])
    before = tokenizer_hash(tok)
    tok(["a b c"], truncation=True, max_length=7, padding="max_length")  # sets both on the backend
    assert tokenizer_hash(tok) == before


def test_dropout_refused_and_bad_settings(assets, tmp_path):
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig.from_flat(task="rte", tap_cache=str(tmp_path), backbone_dropout=True)
    with pytest.raises(ConfigError, match="method 'full' reads no backbone taps"):
        TrainConfig.from_flat(task="rte", tap_cache=str(tmp_path), method="full")
    with pytest.raises(ConfigError, match="tap_dtype"):
        TrainConfig.from_flat(task="rte", tap_dtype="int8")
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


def test_cached_runs_never_run_the_backbone(assets, tmp_path, monkeypatch):
    """Training steps AND evaluation of a cached classification run read taps: the backbone runs only to build."""
    import transformers

    calls = {"n": 0}
    original = transformers.BertModel.forward

    def counting(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or tuple(ids.shape) != (
            1,
            2,
        ):  # not get_ladder_model's 2-token self-check (core/self_check.py)
            calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.BertModel, "forward", counting)
    cache = str(tmp_path / "cache")
    # a random tap projection: a PCA one is fitted on training batches first (the backbone runs on them)
    first = train(config(assets, tmp_path / "a", tap_cache=cache, epochs=2, tap_projection="random"))
    # the builds alone, in batches of eval_batch_size 16: 20 training examples (2) and 8 validation examples (1);
    # none in the 6 steps or the 2 evaluations
    assert calls["n"] == 3
    splits = [r["split"] for r in records(tmp_path / "a", "tap_cache") if "built" in r]
    assert splits == ["train", "validation"]
    calls["n"] = 0
    second = train(config(assets, tmp_path / "b", tap_cache=cache, epochs=2, tap_projection="random"))
    assert calls["n"] == 0
    scores = [[r["metrics"] for r in run["metrics"]["validation"]] for run in (first, second)]
    assert scores[1] == scores[0]


def test_generation_runs_evaluate_through_the_backbone(assets, tmp_path):
    """Text-to-text evaluation generates (its decoder inputs are its own outputs): only training is cached."""
    kw = {"backbone": assets["t5"], "format": "text2text", "epochs": 1, "side_layers": [0, 1]}
    train(config(assets, tmp_path / "t5", tap_cache=str(tmp_path / "cache"), **kw))
    splits = [r["split"] for r in records(tmp_path / "t5", "tap_cache") if "built" in r]
    assert splits == ["train"]
