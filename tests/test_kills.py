"""SIGKILL at the exact moments where a write is being published: the previous state is intact afterwards.

``fault_injection.py`` kills a child process at the n-th call of a named function: between the two renames of the
checkpoint swap, half-way through writing the new checkpoint, at the rename that publishes a tap-cache entry, at
the rename that puts ``predict --output`` in place. Nothing runs after a SIGKILL (no ``finally``), so what is on
disk is what a power cut would leave. The yardstick run and the fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fault_injection import Fault, run_cli
from reliability_setup import (
    ENV,
    SLOW_START_S,
    _copy,
    _state,
    assert_same_as_reference,
    cli_args,
    run_config,
    snapshot,
)
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune.io import verify_checksums
from laddertune.training import checkpoint_candidates, train

KILLED = -9

# (id, the fault, the checkpoint steps left as candidates (newest first), the step --resume starts from)
SWAP_KILLS = [
    (
        "between the two renames of the swap",
        Fault("pathlib:Path.rename", match="checkpoint-last.tmp", at=2, action="kill"),
        [4],
        4,
    ),
    (
        "half-way through writing the new checkpoint",
        Fault(
            "laddertune.io.tensors:save_file", match="checkpoint-last.tmp", at=3, when="after", action="kill"
        ),
        [4],
        4,
    ),
    (
        "after the swap, before the old one is dropped",
        Fault("pathlib:Path.rename", match="checkpoint-last.tmp", at=2, when="after", action="kill"),
        [8, 4],
        8,
    ),
]


@pytest.mark.parametrize(
    ("fault", "left", "resumed_from"), [c[1:] for c in SWAP_KILLS], ids=[c[0] for c in SWAP_KILLS]
)
def test_kill_during_the_checkpoint_swap_keeps_the_previous_checkpoint(
    assets, reference, tmp_path, fault, left, resumed_from
):
    out = tmp_path / "run"
    rc, _, err = run_cli(cli_args(assets, out), [fault], ENV, SLOW_START_S)
    assert rc == KILLED, err
    candidates = checkpoint_candidates(out)
    assert [_state(c)["step"] for c in candidates] == left
    for c in candidates:
        verify_checksums(c)  # every candidate complete: the kill never left half a checkpoint under its name
    train(run_config(assets, out, resume=True))
    resumes = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    assert [r["step"] for r in resumes] == [resumed_from]
    assert_same_as_reference(out, reference)


def test_kill_while_publishing_a_tap_cache_entry_keeps_the_other_entries(assets, tmp_path):
    """An entry of the cache (side layer 1 only) exists; a run caching all layers is killed at the rename that
    would publish its entry: the old entry is unchanged and still served, the half-published build is never
    read, and the next run builds the entry whole."""
    cache = tmp_path / "cache"
    extra = ["--tap-cache", str(cache), "--epochs", "1"]
    train(run_config(assets, tmp_path / "one-layer", tap_cache=str(cache), epochs=1, side_layers=[1]))
    entries = sorted(p for p in cache.iterdir() if not p.name.startswith("."))
    before = {p.name: snapshot(p) for p in entries}
    publish = Fault("pathlib:Path.rename", match=".building-", at=1, action="kill")
    rc, _, err = run_cli(cli_args(assets, tmp_path / "killed", *extra), [publish], ENV, SLOW_START_S)
    assert rc == KILLED, err
    assert {p.name: snapshot(p) for p in cache.iterdir() if not p.name.startswith(".")} == before
    assert len([p for p in cache.iterdir() if p.name.startswith(".building-")]) == 1  # the dead build, unread
    results = train(run_config(assets, tmp_path / "again", tap_cache=str(cache), epochs=1))
    records = [json.loads(x) for x in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    assert [r["built"] for r in records if r["type"] == "tap_cache" and "built" in r] == [True, True]
    assert not [p for p in cache.iterdir() if p.name.startswith(".building-")]
    assert results["metrics"]["validation"]
    for name, kept in before.items():
        assert snapshot(cache / name) == kept
        verify_checksums(cache / name)


@pytest.fixture
def run_copy(reference, tmp_path) -> Path:
    """A copy of the reference run beside it (its relative backbone path still resolves)."""
    run = _copy(reference, reference.parent / f"kill-{tmp_path.name}")
    yield run
    shutil.rmtree(run)


def test_kill_while_writing_predict_output_keeps_the_previous_file(run_copy, tmp_path):
    run = run_copy
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"sentence1": "a cat", "sentence2": "yes yes yes yes"}\n')
    out.write_text("yesterday's predictions\n")
    argv = ["predict", "--checkpoint", str(run), "--input", str(inp), "--output", str(out), "--no-progress"]
    rc, _, err = run_cli(argv, [Fault("os:replace", match=str(out), action="kill")], ENV, SLOW_START_S)
    assert rc == KILLED, err
    assert out.read_text() == "yesterday's predictions\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("in.jsonl", "out.jsonl")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.jsonl.")  # the unpublished temporary file
    rc, _, err = run_cli(argv, [], ENV, SLOW_START_S)
    assert rc == 0, err
    assert json.loads(out.read_text().splitlines()[0])["label"] in ("entailment", "not_entailment")
