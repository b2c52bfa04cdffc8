"""Checkpoints cannot be half-written: corrupt or torn files are detected, and resume falls back or refuses.

The yardstick run and the fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from reliability_setup import (
    _copy,
    _flip,
    _state,
    _truncate,
    assert_same_as_reference,
    cli_args,
    run_config,
    snapshot,
)
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

import laddertune.io.tensors as checkpoint_module
import laddertune.training.checkpoint as run_checkpoint
from laddertune import CheckpointError, OutputError
from laddertune.cli import main
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.io import CHECKSUMS_NAME, verify_checksums
from laddertune.training import STATE_JSON, STATE_TENSORS, train

# ------------------------------------------------------------------------------- 2. corrupt and torn checkpoints


CORRUPTIONS = {
    "side weights truncated": lambda d: _truncate(d / WEIGHTS_NAME),
    "side weights, one bit flipped": lambda d: _flip(d / WEIGHTS_NAME),
    "optimizer state, one bit flipped": lambda d: _flip(d / STATE_TENSORS),
    "trainer_state.json truncated": lambda d: _truncate(d / STATE_JSON),
    "optimizer state missing": lambda d: (d / STATE_TENSORS).unlink(),
    "no checksum list, side weights truncated": lambda d: (
        (d / CHECKSUMS_NAME).unlink(),
        _truncate(d / WEIGHTS_NAME),
    ),
    # deleting the list must not switch the check off: a folder without one is not trusted
    "no checksum list, one bit flipped": lambda d: ((d / CHECKSUMS_NAME).unlink(), _flip(d / WEIGHTS_NAME)),
    "no checksum list, files intact": lambda d: (d / CHECKSUMS_NAME).unlink(),
    "empty checksum list": lambda d: (d / CHECKSUMS_NAME).write_text(""),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_checkpoint_is_detected_and_resume_uses_the_previous_one(
    assets, reference, interrupted, tmp_path, caplog, corruption
):
    out = _copy(interrupted, tmp_path / "run")
    newest = out / "checkpoint-last"
    CORRUPTIONS[corruption](newest)
    if (newest / CHECKSUMS_NAME).exists():  # the list catches every change, before anything is loaded
        with pytest.raises(
            CheckpointError, match=r"checkpoint-last/\S+ (is corrupt or truncated|is missing|lists no file)"
        ):
            verify_checksums(newest)
    with caplog.at_level("WARNING", logger="laddertune.training"):
        results = train(run_config(assets, out, resume=True))
    warning = [r.getMessage() for r in caplog.records if "previous checkpoint" in r.getMessage()]
    assert len(warning) == 1 and "checkpoint-last" in warning[0] and "\n" not in warning[0]
    assert re.search(
        r"(corrupt or truncated|is missing|unreadable|has no SHA256SUMS|lists no file)", warning[0]
    )
    assert results["timing"]["resumed"]
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "resume"] == [4]  # from checkpoint-last.old
    assert_same_as_reference(out, reference)


def test_resume_with_no_intact_checkpoint_exits_2_and_changes_nothing(assets, interrupted, tmp_path, capsys):
    out = _copy(interrupted, tmp_path / "run")
    _flip(out / "checkpoint-last" / WEIGHTS_NAME)
    _truncate(out / "checkpoint-last.old" / STATE_JSON)
    before = snapshot(out)
    rc = main(cli_args(assets, out, "--resume"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: cannot resume"), err
    assert "checkpoint-last/ladder_model.safetensors is corrupt" in err
    assert "checkpoint-last.old/trainer_state.json is corrupt" in err
    assert snapshot(out) == before


def test_crash_between_the_folder_renames_resumes_from_old(assets, reference, interrupted, tmp_path):
    """A kill between 'checkpoint-last -> .old' and '.tmp -> checkpoint-last' leaves .old and a complete .tmp."""
    out = _copy(interrupted, tmp_path / "run")
    shutil.rmtree(out / "checkpoint-last.old")
    (out / "checkpoint-last").rename(out / "checkpoint-last.old")
    shutil.copytree(out / "checkpoint-last.old", out / "checkpoint-last.tmp")
    train(run_config(assets, out, resume=True))
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "resume"] == [8]
    assert_same_as_reference(out, reference)


class _Fault:
    """Armed once the first checkpoint (step 4) is on disk; then the n-th matching write fails half-way."""

    def __init__(self, n: int = 1, exc: BaseException | None = None):
        self.armed, self.n, self.fired = False, n, False
        self.exc = exc or OSError(28, "No space left on device")

    def hit(self) -> bool:
        if not self.armed or self.fired:
            return False
        self.n -= 1
        self.fired = self.n == 0
        return self.fired


def _fail_save_file(monkeypatch, fault: _Fault) -> None:
    real = checkpoint_module.save_file

    def save_file(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        if fault.hit():
            _truncate(Path(filename))
            raise fault.exc

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)


def _fail_text(monkeypatch, fault: _Fault, name: str, target: str) -> None:
    real = getattr(run_checkpoint, target)

    def write(path, *args):
        if Path(path).name == name and fault.hit():
            real(path, *args)
            _truncate(Path(path))  # half a file under its final name in the temp folder, then the crash
            raise fault.exc
        return real(path, *args)

    monkeypatch.setattr(run_checkpoint, target, write)


def _fail_checksums(monkeypatch, fault: _Fault) -> None:
    real = run_checkpoint.write_checksums

    def write_checksums(directory):
        real(directory)
        if fault.hit():
            _truncate(Path(directory) / CHECKSUMS_NAME)
            raise fault.exc

    monkeypatch.setattr(run_checkpoint, "write_checksums", write_checksums)


@pytest.mark.parametrize(
    "where", ["side weights", "optimizer state", "trainer_state.json (Ctrl-C)", "checksum list"]
)
def test_crash_while_writing_keeps_the_old_checkpoint(assets, reference, tmp_path, monkeypatch, where):
    """The writer dies half-way through the step-8 checkpoint: checkpoint-last is still step 4's, byte for byte,
    no temp folder or half-written file is left, and --resume ends on the reference."""
    fault = _Fault(n=2 if where == "optimizer state" else 1)
    if where in ("side weights", "optimizer state"):
        _fail_save_file(monkeypatch, fault)
    elif where == "checksum list":
        _fail_checksums(monkeypatch, fault)
    else:
        fault.exc = KeyboardInterrupt()
        _fail_text(monkeypatch, fault, STATE_JSON, "atomic_write_text")
    out = tmp_path / "run"
    before = {}

    def arm(record):
        if record["type"] == "train" and record["step"] == 5:
            before.update(snapshot(out / "checkpoint-last"))
            fault.armed = True

    # a write error (a full disk) is one line naming the folder; Ctrl-C stays a KeyboardInterrupt
    expected = KeyboardInterrupt if isinstance(fault.exc, KeyboardInterrupt) else OutputError
    with pytest.raises(expected) as raised:
        train(run_config(assets, out), on_record=arm)
    if expected is OutputError:
        message = str(raised.value)
        assert "checkpoint-last: No space left on device (the previous checkpoint there is intact)" in message
        assert raised.value.errno == 28
        assert "\n" not in message
    assert fault.fired and before
    assert snapshot(out / "checkpoint-last") == before and _state(out / "checkpoint-last")["step"] == 4
    assert not (out / "checkpoint-last.tmp").exists() and not (out / "checkpoint-last.old").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    verify_checksums(out / "checkpoint-last")
    monkeypatch.undo()
    train(run_config(assets, out, resume=True))
    assert_same_as_reference(out, reference)
