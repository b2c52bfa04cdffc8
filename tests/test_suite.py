"""``benchmarks/suite.py``: the sweeps' command lines, and one tiny end-to-end table through ``laddertune train``.

The end-to-end test runs the suite's ``--smoke`` budget (3 steps) on a tiny random BERT: the plumbing (one JSON per
run, the rows file, the report, skipping what is done), not a result.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_trainer import save_backbone, write_data

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("suite", ROOT / "benchmarks" / "suite.py")
suite = importlib.util.module_from_spec(_spec)
sys.modules["suite"] = suite  # dataclasses look their module up there
_spec.loader.exec_module(suite)

ROW_FIELDS = {"task", "method", "seed", "score", "peak_train_gib", "seconds_per_step", "steps", "batch_size"}


def _settings(command: str, *extra: str) -> list:
    return suite.settings(command, suite.parse_args([command, *extra]))


def test_kept_layers_spread_the_dropped_ones_from_layer_0():
    assert suite.kept_layers(12, 3) == [1, 2, 3, 5, 6, 7, 9, 10, 11]  # the paper's t5-base list
    assert suite.kept_layers(6, 0) == [0, 1, 2, 3, 4, 5]
    assert suite.kept_layers(6, 2) == [1, 2, 4, 5]
    assert suite.kept_layers(6, 3) == [1, 3, 5]
    with pytest.raises(SystemExit):
        suite.kept_layers(6, 6)


def test_each_command_sweeps_its_settings():
    assert [s.method for s in _settings("table1")] == ["full", "adapter", "lora", "bitfit", "prompt", "lst"]
    fig5 = _settings("figure5")
    assert [(s.method, s.value) for s in fig5 if s.sweep == "r"] == [
        ("lst", 32),
        ("lst", 16),
        ("lst", 8),
        ("lst", 4),
    ]
    assert ("lora", ("--lora-rank", "8")) in [(s.method, s.flags) for s in fig5]
    assert ("adapter", ("--adapter-reduction", "64")) in [(s.method, s.flags) for s in fig5]
    fig6 = {(s.method, s.value): s.flags for s in _settings("figure6", "--drop", "0", "3")}
    assert fig6 == {
        ("lst", 0): (),
        ("lst", 3): ("--side-layers", "1,3,5"),
        ("adapter", 0): ("--freeze-layers", "0"),
        ("adapter", 3): ("--freeze-layers", "3"),
        ("lora", 0): ("--freeze-layers", "0"),
        ("lora", 3): ("--freeze-layers", "3"),
    }
    fig7 = _settings("figure7", "--fisher-samples", "64")
    assert [s.name for s in fig7] == [
        "random",
        "magnitude-residual",
        "magnitude-authors",
        "fisher-residual",
        "fisher-authors",
    ]
    assert fig7[3].flags == ("--init", "fisher", "--pruning-chain", "residual", "--fisher-samples", "64")
    fig8 = _settings("figure8")
    assert [(s.method, s.variant) for s in fig8] == [
        ("lst", "ladders"),
        ("lst", "ladders-magnitude"),
        ("side-tuning", "side-tuning"),
        ("pruned", "pruned-magnitude"),
    ]


def test_the_budget_becomes_train_flags(tmp_path):
    args = suite.parse_args(
        ["table1", "--steps", "10", "--epochs", "3", "--batch-size", "8", "--tap-cache", "c"]
    )
    lst = suite.train_argv(suite.Setting("lst"), "rte", 1, tmp_path / "run", args)
    flags = dict(zip(lst[1::2], lst[2::2], strict=False))
    # ceil(10 / 3) = 4 steps an epoch of batch 8: 32 training examples
    assert (flags["--max-train-samples"], flags["--epochs"], flags["--seed"]) == ("32", "3", "1")
    assert lst[lst.index("--tap-cache") + 1] == os.path.abspath("c")
    full = suite.train_argv(suite.Setting("full"), "rte", 1, tmp_path / "run", args)
    assert "--tap-cache" not in full  # the cache serves the side network's taps only


def test_smoke_table_end_to_end_and_resumed(tmp_path):
    bert, data = save_backbone(tmp_path / "bert"), write_data(tmp_path / "data", n_train=24, n_val=12)
    out, rows_file = tmp_path / "results" / "t1", tmp_path / "results" / "t1.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "table1", "--smoke", "--backbone", bert]
    argv += ["--data-dir", data, "--tasks", "rte", "--methods", "lst", "full", "--output", str(out)]
    argv += [
        "--rows-file",
        str(rows_file),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--tap-cache",
        str(tmp_path / "c"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("[done]") == 2 and "2 runs, 0 failed" in done.stdout, done.stdout
    rows = json.loads(rows_file.read_text())
    assert [(r["task"], r["method"], r["seed"]) for r in rows] == [("rte", "lst", 0), ("rte", "full", 0)]
    for row in rows:
        assert ROW_FIELDS <= set(row) and row["steps"] == 3 and row["batch_size"] == 4
        assert row["peak_train_gib"] > 0 and row["seconds_per_step"] > 0 and row["figure"] == "table1"
        assert (rows_file.parent / row["metrics_path"]).is_file()
        per_run = json.loads((out / f"rte-{row['method']}-s0.json").read_text())
        assert per_run["score"] == row["score"] and per_run["command"][:2] == ["laddertune", "train"]
    assert [r["tap_cache"] for r in rows] == [True, False] and any((tmp_path / "c").iterdir())
    assert [r["tap_cache_built"] for r in rows] == [True, None]  # lst filled the cache, full used none
    assert all(len(r["timed_scores"]) == 1 for r in rows)  # one epoch: one [seconds, score]
    report = out / "report"
    assert {p.name for p in report.iterdir()} == {
        "table1.md",
        "figure1.png",
        "curves_table1_rte.png",
        "time_to_score.md",
        "time_to_score_rte.png",
        "report.md",
        "summary.json",
    }
    # a second call skips both runs and rewrites the same rows
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and again.stdout.count("[skip]") == 2 and "[run" not in again.stdout
    assert json.loads(rows_file.read_text()) == rows


def test_train_args_reach_every_run_shell_split(tmp_path):
    args = suite.parse_args(["table1", "--train-args", "--side-attention-heads 3 --run-name 'a b'"])
    for method in ("lst", "full"):
        argv = suite.train_argv(suite.Setting(method), "sst2", 0, tmp_path / "run", args)
        assert argv[-4:] == ["--side-attention-heads", "3", "--run-name", "a b"]
    plain = suite.train_argv(suite.Setting("lst"), "sst2", 0, tmp_path / "run", suite.parse_args(["table1"]))
    assert "--side-attention-heads" not in plain
