"""A NaN or infinite loss or gradient stops the run and keeps the last good checkpoint.

The yardstick run and the fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import json

import pytest
from reliability_setup import _state, assert_same_as_reference, cli_args
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

import laddertune.training.loop as trainer
from laddertune.cli import main
from laddertune.io import verify_checksums
from laddertune.training import checkpoint_candidates

# --------------------------------------------------------------------------------------------- 4. NaN and inf


def _poison(monkeypatch, at_step: int, kind: str) -> None:
    build = trainer.build_model

    def poisoned(*args, **kwargs):
        model = build(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs, output):
            calls["n"] += module.training  # training forwards only: the k-th is step k
            if module.training and calls["n"] == at_step:
                if kind == "nan loss":
                    output.loss = output.loss * float("nan")
                elif kind == "inf loss":
                    output.loss = output.loss + float("inf")
                else:  # the loss is finite, its gradient is not
                    output.loss.register_hook(lambda g: g * float("inf"))
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(trainer, "build_model", poisoned)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan loss", "the loss is nan"),
        ("inf loss", "the loss is inf"),
        ("inf gradient", "the gradient norm is"),
    ],
)
def test_nan_or_inf_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    assets, reference, tmp_path, capsys, monkeypatch, kind, message
):
    out = tmp_path / "run"
    _poison(monkeypatch, 10, kind)
    rc = main(cli_args(assets, out))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: step 10 (epoch 1): {message}")
    assert err.endswith(f"kept the last good checkpoint, {out / 'checkpoint-last'}")
    assert [_state(c)["step"] for c in checkpoint_candidates(out)] == [8, 4]
    for c in checkpoint_candidates(out):
        verify_checksums(c)
    assert not (out / "results.json").exists()
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert (last["type"], last["step"]) == ("diverged", 10)
    if kind == "nan loss":  # the kept checkpoint is good: resuming without the fault ends on the reference
        monkeypatch.undo()
        assert main(cli_args(assets, out, "--resume")) == 0
        assert_same_as_reference(out, reference)
