"""What the reliability tests share: one tiny run as the yardstick, its fixtures, and helpers.

One tiny run is the yardstick: a 2-layer BERT (32 wide) on 48 synthetic RTE examples, 3 epochs of 12 steps,
``checkpoint-last`` every 4 steps (:func:`reference`). Every way of breaking that run in the ``test_*`` files beside
this one must end, after ``--resume``, on exactly the reference's metrics and bytes of side weights.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_trainer import save_backbone, write_data

from laddertune.core.side_checkpoint import INDEX_NAME, WEIGHTS_NAME
from laddertune.io import CHECKSUMS_NAME, verify_checksums
from laddertune.training import STATE_JSON, STATE_TENSORS, checkpoint_candidates, train
from laddertune.training.config import TrainConfig

STEPS = 36  # 48 examples / batch 4 = 12 steps an epoch, 3 epochs; checkpoint-last at steps 4, 8, 12 (epoch end)...
RUN = {
    "task": "rte",
    "epochs": 3,
    "batch_size": 4,
    "save_steps": 4,
    "log_every": 1,
    "memory_steps": 0,
    "lr": 1e-2,
}
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
ENV.pop("LADDERTUNE_DATA_DIR", None)
SLOW_START_S = 600  # a subprocess imports torch and transformers: seconds on a loaded 2-core machine


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reliability")
    return {
        "root": root,
        "bert": save_backbone(root / "bert", "bert", seed=0),
        "bert2": save_backbone(root / "bert2", "bert", seed=1),  # same architecture, other weights
        "data": write_data(root / "data", n_train=48, n_val=16),
    }


def run_config(assets, out: Path, **kw) -> TrainConfig:
    return TrainConfig.from_flat(
        **{**RUN, "backbone": assets["bert"], "data_dir": assets["data"], "output_dir": str(out), **kw}
    )


def cli_args(assets, out: Path, *extra) -> list[str]:
    """The command line of :func:`run_config` (same settings: ``--resume`` accepts either's folder)."""
    argv = ["train", "--task", "rte", "--backbone", assets["bert"], "--data-dir", assets["data"]]
    argv += ["--epochs", "3", "--batch-size", "4", "--save-steps", "4", "--log-every", "1", "--lr", "0.01"]
    argv += ["--memory-steps", "0", "--threads", "1", "--no-progress", "--output-dir", out, *extra]
    return [str(a) for a in argv]


def _single_thread(fn):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # what --threads 1 does in the subprocesses: the same kernels, the same bits
    try:
        return fn()
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(assets) -> Path:
    """The uninterrupted run every broken run must reproduce bit for bit."""
    out = assets["root"] / "reference"
    _single_thread(lambda: train(run_config(assets, out)))
    return out


@pytest.fixture(scope="module")
def interrupted(assets) -> Path:
    """A run stopped at step 10: checkpoint-last holds step 8, checkpoint-last.old step 4."""
    out = assets["root"] / "interrupted"

    def stop(record):
        if record["type"] == "train" and record["step"] == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _single_thread(lambda: train(run_config(assets, out), on_record=stop))
    assert [_state(c)["step"] for c in checkpoint_candidates(out)] == [8, 4]
    return out


def _state(directory: Path) -> dict:
    return json.loads((directory / STATE_JSON).read_text())


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def snapshot(folder: Path) -> dict | None:
    """Every entry under ``folder`` with its bytes, inode and mtime: any rewrite, even of equal bytes, shows."""
    if not folder.exists():
        return None
    out = {}
    for p in sorted(folder.rglob("*")):
        st_ = p.stat()
        key = str(p.relative_to(folder))
        out[key] = (p.read_bytes() if p.is_file() else None, st_.st_ino, st_.st_mtime_ns)
    return out


def _records(out: Path) -> list[dict]:
    """metrics.jsonl without timings and resume markers: what must be identical between runs."""
    kept = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["type"] != "resume":
            kept.append(
                {k: v for k, v in r.items() if k not in ("seconds_per_step", "eval_seconds", "train_seconds")}
            )
    return kept


def _metrics(out: Path) -> dict:
    m = json.loads((out / "results.json").read_text())["metrics"]
    m["validation"] = [{k: v for k, v in r.items() if k != "eval_seconds"} for r in m["validation"]]
    return m


def assert_same_as_reference(out: Path, reference: Path) -> None:
    """Same metrics, same bytes of side weights (best and last) and optimizer state, same loss curve, no leftovers."""
    assert _metrics(out) == _metrics(reference)
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    assert (a["parameters"], a["effective"]) == (b["parameters"], b["effective"])
    # the data's source names its folder relative to each run folder (no absolute paths): the same folder
    (kind, where), (kind_b, where_b) = (r["data"]["source"].split(" ", 1) for r in (a, b))
    assert kind == kind_b and os.path.samefile(out / where, reference / where_b)
    assert {**a["data"], "source": None} == {**b["data"], "source": None}
    files = [
        ("checkpoint-best", WEIGHTS_NAME),
        ("checkpoint-last", WEIGHTS_NAME),
        ("checkpoint-last", STATE_TENSORS),
    ]
    for folder, name in files:
        assert (out / folder / name).read_bytes() == (reference / folder / name).read_bytes(), (
            f"{folder}/{name}"
        )
    assert _records(out) == _records(reference)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".old")]
    for folder in ("checkpoint-best", "checkpoint-last"):
        verify_checksums(out / folder)


def test_reference_run_layout(reference):
    """What a finished run keeps: no previous checkpoint (.old), no temp folder; each checkpoint has SHA256SUMS."""
    assert sorted(p.name for p in reference.iterdir()) == [
        "checkpoint-best",
        "checkpoint-last",
        "metrics.jsonl",
        "results.json",
        "train_config.json",
    ]
    assert sorted(p.name for p in (reference / "checkpoint-last").iterdir()) == sorted(
        [CHECKSUMS_NAME, "ladder_config.json", WEIGHTS_NAME, INDEX_NAME, STATE_TENSORS, STATE_JSON]
    )
    sums = (reference / "checkpoint-best" / CHECKSUMS_NAME).read_text().splitlines()
    assert [line.split("  ")[1] for line in sums] == ["ladder_config.json", WEIGHTS_NAME, INDEX_NAME]
    assert _state(reference / "checkpoint-last")["step"] == STEPS


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path, offset: int = -3) -> None:
    """Flip one bit inside the last tensor's bytes: safetensors itself loads this without complaint."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
