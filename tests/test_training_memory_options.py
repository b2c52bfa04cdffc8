"""The training-side memory options: ``--side-checkpointing`` and ``--optimizer adamw|adamw8bit``.

bitsandbytes is optional and not in the test environment: its absence and an unusable backend are checked with
stand-ins; the real 8-bit optimizer runs (CPU backend of bitsandbytes >= 0.46) only where it is installed.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from test_trainer import (  # noqa: F401 (one_thread: an autouse fixture)
    _interrupt_after,
    config,
    one_thread,
    save_backbone,
    write_data,
)

from laddertune.cli import main
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.errors import ConfigError
from laddertune.io import load_tensors
from laddertune.training import train
from laddertune.training.config import TrainConfig
from laddertune.training.optimizer import make_optimizer, state_bytes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("memory-options")
    return {"bert": save_backbone(root / "bert"), "data": write_data(root / "data")}


def test_side_checkpointing_trains_exactly_as_without(tiny, tmp_path):
    """Same losses, same weights after two epochs (the recomputation restores the dropout RNG); recorded."""
    a = train(config(tiny, tmp_path / "a", epochs=1, lr=1e-2))
    b = train(config(tiny, tmp_path / "b", epochs=1, lr=1e-2, side_checkpointing=True))
    assert a["compute"]["side_checkpointing"] is False and b["compute"]["side_checkpointing"] is True
    wa = load_tensors(tmp_path / "a" / "checkpoint-last" / WEIGHTS_NAME)
    wb = load_tensors(tmp_path / "b" / "checkpoint-last" / WEIGHTS_NAME)
    assert wa.keys() == wb.keys()
    for k in wa:  # float32 rounding only (gradient accumulation order), see test_side_checkpointing
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)


def test_options_are_validated():
    with pytest.raises(ConfigError, match="optimizer must be one of adamw, adamw8bit"):
        TrainConfig.from_flat(task="rte", optimizer="sgd")
    with pytest.raises(ConfigError, match="side_checkpointing is an option of method lst"):
        TrainConfig.from_flat(task="rte", method="lora", side_checkpointing=True)
    assert TrainConfig.from_flat(task="rte").optimization.optimizer == "adamw"


def test_adamw8bit_without_bitsandbytes_is_one_line_exit_2(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    out = tmp_path / "run"
    argv = ["train", "--task", "rte", "--backbone", tiny["bert"], "--data-dir", tiny["data"]]
    rc = main([*argv, "--output-dir", str(out), "--optimizer", "adamw8bit", "--memory-steps", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert err.startswith("error: --optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes")
    assert not out.exists()  # nothing written


def test_adamw8bit_that_cannot_run_on_the_device_is_a_clear_error(monkeypatch):
    class Broken(torch.optim.Optimizer):
        def __init__(self, params, **kw):
            super().__init__(params, kw)

        def step(self, closure=None):
            raise RuntimeError("no kernel for this device\nlong traceback text")

    fake = types.SimpleNamespace(__version__="0.0-test", optim=types.SimpleNamespace(AdamW8bit=Broken))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(
        ConfigError, match=r"^bitsandbytes 0.0-test AdamW8bit cannot run on cpu: no kernel for this device$"
    ):
        make_optimizer([p], "adamw8bit", lr=1e-3, weight_decay=0.0, device=torch.device("cpu"))


def test_adamw8bit_trains_resumes_and_saves_state(tiny, tmp_path):
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is optional and not installed here")
    torch.manual_seed(0)
    big = [torch.nn.Parameter(torch.randn(256, 64)), torch.nn.Parameter(torch.randn(64))]
    for p in big:
        p.grad = torch.randn_like(p)
    full = make_optimizer(big, "adamw", lr=1e-3, weight_decay=0.0, device=torch.device("cpu"))
    small = make_optimizer(big, "adamw8bit", lr=1e-3, weight_decay=0.0, device=torch.device("cpu"))
    assert isinstance(small, bnb.optim.AdamW8bit)
    full.step(), small.step()
    assert state_bytes(small) < 0.3 * state_bytes(full)  # 8-bit moments of the 16,384-value matrix
    kw = {"optimizer": "adamw8bit", "epochs": 2, "save_steps": 2, "lr": 1e-2}
    whole = train(config(tiny, tmp_path / "a", **kw))
    assert whole["compute"]["optimizer"] == "adamw8bit" and whole["compute"]["optimizer_state_bytes"] > 0
    with pytest.raises(KeyboardInterrupt):
        train(config(tiny, tmp_path / "b", **kw), on_record=_interrupt_after(9))
    resumed = train(config(tiny, tmp_path / "b", **kw, resume=True))
    a = load_tensors(tmp_path / "a" / "checkpoint-last" / WEIGHTS_NAME)
    b = load_tensors(tmp_path / "b" / "checkpoint-last" / WEIGHTS_NAME)
    assert all(
        torch.equal(a[k], b[k]) for k in a
    )  # the nested 8-bit state round-trips through the checkpoint
    assert resumed["metrics"]["best_epoch"] == whole["metrics"]["best_epoch"]
