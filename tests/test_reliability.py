"""Reliability: training survives a kill, checkpoints cannot be half-written, bad input gets a clear error.

One tiny run is the yardstick: a 2-layer BERT (32 wide) on 48 synthetic RTE examples, 3 epochs of 12 steps,
``checkpoint-last`` every 4 steps (:func:`reference`). Every way of breaking that run below -- SIGKILL at seeded
random points, corrupt or half-written checkpoints, a NaN -- must end, after ``--resume``, on exactly the reference's
metrics and bytes of side weights. Bad input must give one ``error:`` line, exit code 2 and leave the output folder
as it was. The loaders must never unpickle, nor run a backbone's own code unless asked. Random bytes and values
into the data readers and the configs may only raise :class:`LadderTuneError`.
"""

from __future__ import annotations

import ast
import atexit
import csv
import dataclasses
import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_backbone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trainer import one_thread, save_backbone, write_data  # noqa: F401 (one_thread: an autouse fixture)

import laddertune.checkpoint as checkpoint_module
import laddertune.run_checkpoint as run_checkpoint
import laddertune.trainer as trainer
from laddertune import CheckpointError, LadderConfig, LadderModel
from laddertune.checkpoint import CHECKSUMS_NAME, WEIGHTS_NAME, verify_checksums
from laddertune.cli import build_parser, main
from laddertune.data import load_splits
from laddertune.errors import ConfigError, DataError, LadderTuneError
from laddertune.run_config import TrainConfig
from laddertune.trainer import STATE_JSON, STATE_TENSORS, checkpoint_candidates, train

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
    return TrainConfig(
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
            kept.append({k: v for k, v in r.items() if k not in ("seconds_per_step", "eval_seconds")})
    return kept


def _metrics(out: Path) -> dict:
    m = json.loads((out / "results.json").read_text())["metrics"]
    m["validation"] = [{k: v for k, v in r.items() if k != "eval_seconds"} for r in m["validation"]]
    return m


def assert_same_as_reference(out: Path, reference: Path) -> None:
    """Same metrics, same bytes of side weights (best and last) and optimizer state, same loss curve, no leftovers."""
    assert _metrics(out) == _metrics(reference)
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    assert (a["parameters"], a["effective"], a["data"]) == (b["parameters"], b["effective"], b["data"])
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
        [CHECKSUMS_NAME, "ladder_config.json", WEIGHTS_NAME, STATE_TENSORS, STATE_JSON]
    )
    sums = (reference / "checkpoint-best" / CHECKSUMS_NAME).read_text().splitlines()
    assert [line.split("  ")[1] for line in sums] == ["ladder_config.json", WEIGHTS_NAME]
    assert _state(reference / "checkpoint-last")["step"] == STEPS


# ---------------------------------------------------------------------------------- 1. SIGKILL, then --resume


def _max_step(out: Path) -> int:
    """The last training step metrics.jsonl shows (a line cut short by a kill is skipped)."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return 0
    step = 0
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("type") == "train":
            step = max(step, r["step"])
    return step


def _run_until(argv: list[str], cwd: Path, kill_when) -> bool:
    """Run ``laddertune`` in a subprocess and SIGKILL it once ``kill_when(seconds since start)`` is true.

    Returns True when it was killed, False when it finished first (with exit code 0).
    """
    log = cwd / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "laddertune.cli", *argv],
            cwd=cwd,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        t0 = time.monotonic()
        while proc.poll() is None:
            seconds = time.monotonic() - t0
            if kill_when(seconds):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            if seconds > SLOW_START_S:
                proc.kill()
                pytest.fail(f"laddertune did not finish in {SLOW_START_S} s")
            time.sleep(0.002)
    assert proc.returncode == 0, log.read_text()
    return False


def _kill_trigger(out: Path, kind: str, target: int, delay: float):
    """When to kill: ``delay`` seconds after the start ("start-up"; at step ``target`` at the latest, should a fast
    machine start up sooner), once step ``target`` is logged ("mid-step"), or once a checkpoint write is under way
    after that step ("checkpoint write"; mid-step if the 2 ms polling misses every write in the next 8 steps)."""

    def kill_when(seconds: float) -> bool:
        step = _max_step(out)
        if kind == "start-up":
            return seconds >= delay or step >= target
        if kind == "checkpoint write":
            return step >= target and ((out / "checkpoint-last.tmp").exists() or step >= target + 8)
        return step >= target

    return kill_when


def test_sigkill_at_random_points_then_resume_is_bit_identical(assets, reference, tmp_path):
    """Four seeded kill points: mid-step in a fresh run; while a resumed run starts up (loading, checking
    checksums, truncating metrics.jsonl); while it writes a checkpoint; mid-step late in the run. After each kill
    every checkpoint on disk must be intact; the last --resume must land on the reference's bytes."""
    rng = random.Random(20240607)
    out = tmp_path / "run"
    start_delay = rng.uniform(0.5, 4.0)
    plan = [
        ("mid-step", rng.randint(2, 10)),
        ("start-up", 0),
        ("checkpoint write", rng.randint(13, 22)),
        ("mid-step", rng.randint(25, 31)),
    ]
    tried = []
    for i, (kind, target) in enumerate(plan):
        # the resumed run first replays logged steps: wait for a step past everything already in metrics.jsonl
        floor = _max_step(out)
        target = max(target, floor + 1)
        kill_when = _kill_trigger(out, kind, target, start_delay)
        argv = cli_args(assets, out, *(["--resume"] if i else []))
        killed = _run_until(argv, tmp_path, kill_when)
        assert killed, f"the run finished before kill point {i} ({kind})"
        mid_write = (out / "checkpoint-last.tmp").exists()
        tried.append((kind, target, _max_step(out), mid_write))
        for c in checkpoint_candidates(out):  # a kill never leaves a half-written checkpoint under its name
            verify_checksums(c)
    assert not _run_until(cli_args(assets, out, "--resume"), tmp_path, lambda s: False)
    print(f"kill points (kind, target step, last logged step, inside a checkpoint write): {tried}")
    assert len(tried) == 4
    assert_same_as_reference(out, reference)
    results = json.loads((out / "results.json").read_text())
    assert results["timing"]["resumed"] and results["config"]["resume"]


# ------------------------------------------------------------------------------- 2. corrupt and torn checkpoints


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path, offset: int = -3) -> None:
    """Flip one bit inside the last tensor's bytes: safetensors itself loads this without complaint."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


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
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_checkpoint_is_detected_and_resume_uses_the_previous_one(
    assets, reference, interrupted, tmp_path, caplog, corruption
):
    out = _copy(interrupted, tmp_path / "run")
    newest = out / "checkpoint-last"
    CORRUPTIONS[corruption](newest)
    if (newest / CHECKSUMS_NAME).exists():  # the list catches every change, before anything is loaded
        with pytest.raises(CheckpointError, match=r"checkpoint-last/\S+ is (corrupt or truncated|missing)"):
            verify_checksums(newest)
    with caplog.at_level("WARNING", logger="laddertune.trainer"):
        results = train(run_config(assets, out, resume=True))
    warning = [r.getMessage() for r in caplog.records if "previous checkpoint" in r.getMessage()]
    assert len(warning) == 1 and "checkpoint-last" in warning[0] and "\n" not in warning[0]
    assert re.search(r"(corrupt or truncated|is missing|unreadable)", warning[0]), warning[0]
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

    with pytest.raises(type(fault.exc)):
        train(run_config(assets, out), on_record=arm)
    assert fault.fired and before
    assert snapshot(out / "checkpoint-last") == before and _state(out / "checkpoint-last")["step"] == 4
    assert not (out / "checkpoint-last.tmp").exists() and not (out / "checkpoint-last.old").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    verify_checksums(out / "checkpoint-last")
    monkeypatch.undo()
    train(run_config(assets, out, resume=True))
    assert_same_as_reference(out, reference)


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


# ------------------------------------------------------------------------------------------------ 3. bad input


@pytest.fixture(scope="module")
def bad(assets) -> dict:
    """Broken data files, each next to good ones, and run folders to protect."""
    root = assets["root"] / "bad"
    good = Path(assets["data"]) / "rte"
    paths = {}
    for name, split, content in [
        (
            "malformed",
            "validation.jsonl",
            b'{"sentence1": "a", "sentence2": "b yes", "label": 1}\n'
            b'{"sentence1": "a", "sentence2": "b no", "label": 0}\n'
            b'{"sentence1": "a", "sentence2": "b", "label": 1\n',
        ),
        (
            "label",
            "validation.jsonl",
            b'{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "a", "sentence2": "b", "label": 2}\n',
        ),
        ("empty", "train.jsonl", b""),
    ]:
        (root / name / "rte").mkdir(parents=True)
        for f in ("train.jsonl", "validation.jsonl"):
            shutil.copy(good / f, root / name / "rte" / f)
        (root / name / "rte" / split).write_bytes(content)
        paths[name] = root / name
    rows = "".join(f"the cat sat {'yes' if i % 2 else 'no'},{'pos' if i % 2 else 'neg'}\n" for i in range(12))
    files = {
        "good.csv": "text,label\n" + rows,
        "extra.csv": "text,label\na cat,pos\nb dog,neg\nc red,pos,oops\n",
        "quote.csv": 'text,label\na cat,pos\n"b dog,neg\n',
        "unseen.csv": "text,label\na cat,pos\nb dog,maybe\n",
        "data.parquet": "PAR1",
    }
    for name, text in files.items():
        (root / name).write_text(text)
        paths[name] = root / name
    (root / "latin1.csv").write_bytes("text,label\na cat,pos\nun café,neg\n".encode("latin-1"))
    paths["latin1.csv"] = root / "latin1.csv"
    return paths


def _custom(bad, name: str, *extra) -> list:
    return ["--task", "custom", "--train-file", bad[name], "--text-column", "text", *extra]


# (id, extra arguments (a function of the bad-file paths), what the one error line must say, output folder)
TRAIN_CASES = [
    ("malformed JSONL row", lambda b: ["--data-dir", b["malformed"]], "validation.jsonl:3: malformed JSON"),
    ("malformed CSV row", lambda b: _custom(b, "extra.csv"), "extra.csv:4: 3 fields, but the header has 2"),
    ("unterminated CSV quote", lambda b: _custom(b, "quote.csv"), "quote.csv:3: malformed CSV"),
    (
        "missing text column",
        lambda b: _custom(b, "good.csv", "--text-column", "review"),
        "good.csv:2: no column 'review'; the columns are: text, label",
    ),
    (
        "misnamed label column",
        lambda b: _custom(b, "good.csv", "--label-column", "verdict"),
        "good.csv:2: no column 'verdict'",
    ),
    (
        "label outside the task's label set",
        lambda b: ["--data-dir", b["label"]],
        "validation.jsonl:2: label 2 is not in the label set of rte: 0 (entailment), 1 (not_entailment)",
    ),
    (
        "validation label unseen in training",
        lambda b: _custom(b, "good.csv", "--validation-file", b["unseen.csv"]),
        "unseen.csv:3: label 'maybe' is not in the label set of custom",
    ),
    ("empty dataset", lambda b: ["--data-dir", b["empty"]], "train.jsonl: no examples in the file"),
    ("non-UTF-8 text", lambda b: _custom(b, "latin1.csv"), "latin1.csv:3: not valid UTF-8"),
    ("unknown file type", lambda b: _custom(b, "data.parquet"), "unknown file type '.parquet'"),
    ("unknown task", lambda b: ["--task", "qnlii"], "unknown task 'qnlii'; choose one of cola"),
    (
        "unknown backbone",
        lambda b: ["--backbone", b["good.csv"].parent / "no-such-model"],
        "cannot read the config of backbone",
    ),
    (
        "reduction factor does not divide the hidden size",
        lambda b: ["--reduction-factor", "3"],
        "reduction factor 3 does not divide the backbone's hidden_size (32)",
    ),
    (
        "side layer out of range",
        lambda b: ["--side-layers", "0,5"],
        "side layer 5 is out of range: the backbone's body stack has 2 layers (ids 0..1)",
    ),
    ("max length too small", lambda b: ["--max-length", "4"], "max_length must be an integer >= 8, got 4"),
    (
        "freeze layers with LST",
        lambda b: ["--freeze-layers", "1"],
        "freeze_layers applies to the baselines",
    ),
]


def _one_error_line(rc: int, err: str, message: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(("extra", "message"), [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_bad_input_one_line_exit_2_output_untouched(assets, reference, bad, tmp_path, capsys, extra, message):
    """Each bad input, twice: into a folder holding a finished run with --overwrite (the run must survive: the
    old files go only once data and model are known good), and into a new folder (it must not appear)."""
    finished = _copy(reference, tmp_path / "finished")
    before = snapshot(finished)
    rc = main(cli_args(assets, finished, *map(str, extra(bad)), "--overwrite"))
    _one_error_line(rc, capsys.readouterr().err, message)
    assert snapshot(finished) == before
    fresh = tmp_path / "fresh"
    rc = main(cli_args(assets, fresh, *map(str, extra(bad))))
    _one_error_line(rc, capsys.readouterr().err, message)
    assert not fresh.exists()


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        ("reference", [], "already holds a finished run (results.json); pass --overwrite to replace it"),
        ("reference", ["--resume"], "already holds a finished run (results.json); nothing to resume"),
        ("interrupted", [], "holds an unfinished run: --resume continues it, --overwrite starts over"),
        ("interrupted", ["--resume", "--lr", "0.001"], "cannot resume"),
    ],
    ids=["finished run", "finished run, --resume", "unfinished run", "resume with another lr"],
)
def test_run_folder_guards(assets, request, tmp_path, capsys, source, extra, message):
    out = _copy(request.getfixturevalue(source), tmp_path / "run")
    before = snapshot(out)
    rc = main(cli_args(assets, out, *extra))
    _one_error_line(rc, capsys.readouterr().err, message)
    assert snapshot(out) == before


def _other_backbone(run: Path, backbone: str) -> Path:
    config = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**config, "backbone": backbone}))
    return run


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda run, a: _other_backbone(run, a["bert2"]), "was trained on backbone"),
        (lambda run, a: _flip(run / "checkpoint-best" / WEIGHTS_NAME), "ladder_model.safetensors is corrupt"),
        (
            lambda run, a: _truncate(run / "checkpoint-best" / "ladder_config.json"),
            "ladder_config.json is corrupt",
        ),
    ],
    ids=["side checkpoint of another backbone", "corrupt side weights", "truncated ladder_config.json"],
)
def test_evaluate_refuses_a_checkpoint_that_does_not_fit(
    assets, reference, tmp_path, capsys, break_it, message
):
    run = _copy(reference, tmp_path / "run")
    break_it(run, assets)
    before = snapshot(run)
    rc = main(["evaluate", "--checkpoint", str(run), "--threads", "1"])
    _one_error_line(rc, capsys.readouterr().err, message)
    assert snapshot(run) == before


def test_side_checkpoint_of_another_architecture_is_refused(assets, reference):
    """from_pretrained: a BERT side network onto T5 (or a BERT of other weights) is a CheckpointError."""
    for backbone in (
        tiny_backbone("t5", "seq2seq_lm"),
        tiny_backbone("llama", "sequence_classification"),
        tiny_backbone("bert", "sequence_classification", seed=3),
    ):
        with pytest.raises(CheckpointError, match="was trained on backbone"):
            LadderModel.from_pretrained(backbone, reference / "checkpoint-best")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "qlora"], "invalid choice: 'qlora'"),
        (["--side-layers", "1,x"], "comma-separated integers"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(assets, tmp_path, capsys, argv, message):
    """argparse's own errors: a usage line, then one error line; exit 2."""
    with pytest.raises(SystemExit) as e:
        main(cli_args(assets, tmp_path / "run", *argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip().splitlines()[-1].startswith("laddertune train: error: argument")
    assert message in err and not (tmp_path / "run").exists()


# -- the same through real subprocesses: exit code 2 and no traceback from the real entry point


def _broken_copies(assets, reference, bad, root: Path) -> dict:
    """(argv, folder that must not change, message) for each subprocess case."""
    root.mkdir()
    finished = _copy(reference, root / "finished")
    mismatched = _other_backbone(_copy(reference, root / "mismatched"), assets["bert2"])
    return {
        "malformed JSONL row, --overwrite": (
            cli_args(assets, finished, "--data-dir", bad["malformed"], "--overwrite"),
            finished,
            "validation.jsonl:3: malformed JSON",
        ),
        "unknown method": (
            cli_args(assets, root / "new", "--method", "qlora"),
            root / "new",
            "invalid choice",
        ),
        "side checkpoint of another backbone": (
            ["evaluate", "--checkpoint", str(mismatched), "--threads", "1"],
            mismatched,
            "was trained on backbone",
        ),
        "diverging learning rate": (
            cli_args(assets, root / "diverge", "--lr", "1e30", "--save-steps", "1"),
            None,
            "stopped and kept the last good checkpoint",
        ),
    }


@pytest.fixture(scope="module")
def subprocess_results(assets, reference, bad) -> dict:
    """All subprocess cases at once (each one mostly imports torch; together they share the two cores)."""
    cases = _broken_copies(assets, reference, bad, assets["root"] / "subprocess")
    before = {name: snapshot(folder) if folder else None for name, (_, folder, _) in cases.items()}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "laddertune.cli", *map(str, argv)],
            cwd=assets["root"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (argv, _, _) in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=SLOW_START_S)
        _, folder, message = cases[name]
        results[name] = {
            "rc": proc.returncode,
            "stderr": stderr,
            "message": message,
            "unchanged": folder is None or snapshot(folder) == before[name],
            "root": assets["root"] / "subprocess",
        }
    return results


@pytest.mark.parametrize(
    "name",
    [
        "malformed JSONL row, --overwrite",
        "unknown method",
        "side checkpoint of another backbone",
        "diverging learning rate",
    ],
)
def test_real_subprocess_exit_2_without_traceback(subprocess_results, name):
    r = subprocess_results[name]
    assert r["rc"] == 2 and "Traceback" not in r["stderr"], r["stderr"]
    last = r["stderr"].strip().splitlines()[-1]
    assert r["message"] in last and r["unchanged"]
    if name != "unknown method":  # argparse prints its usage line first
        assert len(r["stderr"].strip().splitlines()) == 1 and last.startswith("error: ")
    if name == "diverging learning rate":  # a real divergence: Adam steps of 1e30 overflow the side network
        m = re.search(r"step (\d+) \(epoch 1\): the (loss|gradient norm) is (nan|inf|-inf)", last)
        assert m, last
        out = r["root"] / "diverge"
        assert _state(out / "checkpoint-last")["step"] == int(m.group(1)) - 1
        verify_checksums(out / "checkpoint-last")
        assert not (out / "results.json").exists()


# ----------------------------------------------------------------------------------------------- 5. safe loading

LIB = Path(trainer.__file__).parent


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_pickle_on_any_load_path():
    """No module imports pickle (or its cousins), every torch.load/np.load is weights-only, nothing turns
    trust_remote_code on or safetensors off by a literal."""
    problems = []
    for path in sorted(LIB.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib") for n in names
                ):
                    problems.append(f"{path.name}:{node.lineno}: imports {names}")
        for call, func in _calls(tree):
            kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
            if func == "torch.load" and kw.get("weights_only") != "True":
                problems.append(f"{path.name}:{call.lineno}: torch.load without weights_only=True")
            if func in ("np.load", "numpy.load") and kw.get("allow_pickle") not in (None, "False"):
                problems.append(f"{path.name}:{call.lineno}: np.load with allow_pickle")
            if kw.get("trust_remote_code") == "True" or kw.get("use_safetensors") == "False":
                problems.append(f"{path.name}:{call.lineno}: {func}({kw})")
    text = "\n".join(p.read_text() for p in LIB.glob("*.py"))
    assert "torch.load(" not in text and "pickle.load" not in text
    assert not problems, problems


class _Payload:
    """Unpickling this creates a file: proof that nothing unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_side_weights_come_from_safetensors_only(assets, reference, interrupted, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    side = _copy(reference / "checkpoint-best", tmp_path / "side")
    (side / CHECKSUMS_NAME).unlink()
    (side / WEIGHTS_NAME).unlink()
    for name in ("ladder_model.bin", "ladder_model.pt", "pytorch_model.bin", "model.ckpt"):
        (side / name).write_bytes(evil)
    import transformers as T

    backbone = T.BertForSequenceClassification.from_pretrained(assets["bert"])
    with pytest.raises(CheckpointError, match=r"missing checkpoint file .*ladder_model.safetensors"):
        LadderModel.from_pretrained(backbone, side)
    (side / WEIGHTS_NAME).write_bytes(evil)  # a pickle under the safetensors name is no safetensors file
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        LadderModel.from_pretrained(backbone, side)
    # the resume path: a pickle in place of the optimizer state
    run = _copy(interrupted, tmp_path / "run")
    for c in ("checkpoint-last", "checkpoint-last.old"):
        (run / c / CHECKSUMS_NAME).unlink()
        (run / c / STATE_TENSORS).write_bytes(evil)
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        train(run_config(assets, run, resume=True))
    assert not marker.exists()


def test_trust_remote_code_is_off_unless_asked(assets, reference, tmp_path, monkeypatch):
    import inspect

    import transformers as T

    from laddertune.backbones import load_backbone, load_tokenizer

    for fn in (load_backbone, load_tokenizer, trainer.choose_format, trainer.evaluate):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn
    assert TrainConfig(task="rte").trust_remote_code is False
    parse = build_parser().parse_args
    assert parse(["train", "--task", "rte"]).trust_remote_code is False
    assert parse(["train", "--task", "rte", "--trust-remote-code"]).trust_remote_code is True
    assert parse(["evaluate", "--checkpoint", "x"]).trust_remote_code is False
    with pytest.raises(ConfigError, match="trust_remote_code must be true or false"):
        TrainConfig(task="rte", trust_remote_code="yes")

    seen = []
    for cls in (T.AutoConfig, T.AutoTokenizer, T.AutoModelForSequenceClassification):
        real = cls.from_pretrained

        def spy(*args, _real=real, _cls=cls.__name__, **kwargs):
            seen.append((_cls, kwargs.get("trust_remote_code")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)

    def flags(argv) -> set:
        seen.clear()
        assert main(argv) == 0
        return set(seen)

    one_epoch = ["--epochs", "1", "--save-steps", "12"]
    assert flags(cli_args(assets, tmp_path / "a", *one_epoch)) == {
        ("AutoConfig", False),
        ("AutoTokenizer", False),
        ("AutoModelForSequenceClassification", False),
    }
    assert flags(cli_args(assets, tmp_path / "b", *one_epoch, "--trust-remote-code")) == {
        ("AutoConfig", True),
        ("AutoTokenizer", True),
        ("AutoModelForSequenceClassification", True),
    }
    # evaluate never takes the flag from the run folder: a copied folder cannot switch it on
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["trust_remote_code"] is True
    assert {flag for _, flag in flags(["evaluate", "--checkpoint", str(tmp_path / "b")])} == {False}
    assert {
        flag for _, flag in flags(["evaluate", "--checkpoint", str(tmp_path / "b"), "--trust-remote-code"])
    } == {True}


# ------------------------------------------------------------------------------------------------------ 6. fuzz

_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="laddertune-reliability-fuzz-"))
atexit.register(shutil.rmtree, _FUZZ_DIR, ignore_errors=True)
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
_COLUMNS = ["text", "label", "t2", "y", "", " text", "Text", "label ", "sentence1", "sentence2"]
_cells = st.one_of(
    st.sampled_from(
        ["0", "1", "2", "-1", "1.5", "nan", "inf", "1e400", "yes", "no", "", " ", '"', ",", "\t", "\n"]
    ),
    st.text(max_size=6),
)
_option = st.one_of(st.none(), st.sampled_from(_COLUMNS), st.text(max_size=3))


def _write_table(path: Path, header: list[str], rows: list[list[str]], raw: bool) -> None:
    if path.suffix == ".jsonl":
        lines = [json.dumps(dict(zip(header, row, strict=False)) if not raw else row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        return
    delimiter = "\t" if path.suffix == ".tsv" else ","
    if raw:  # no quoting at all: commas, quotes and newlines in the cells break the rows
        text = "\n".join(delimiter.join(r) for r in [header, *rows])
    else:
        buf = io.StringIO()
        csv.writer(buf, delimiter=delimiter).writerows([header, *rows])
        text = buf.getvalue()
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))


def _check_loaded(splits) -> None:
    spec = splits.spec
    for split in (splits.train, splits.validation, splits.test or []):
        for e in split:
            assert isinstance(e["text"], str) and (e["text_pair"] is None or isinstance(e["text_pair"], str))
            if spec.is_regression:
                assert isinstance(e["label"], float) and e["label"] == e["label"]
            else:
                assert isinstance(e["label"], int) and 0 <= e["label"] < spec.num_labels


@FUZZ
@given(
    header=st.lists(st.one_of(st.sampled_from(_COLUMNS), st.text(max_size=4)), max_size=4),
    rows=st.lists(st.lists(_cells, max_size=5), max_size=6),
    ext=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    raw=st.booleans(),
    task=st.sampled_from(["custom", "rte", "stsb", "sst2"]),
    text=_option,
    pair=_option,
    label=_option,
    validation=st.booleans(),
    protocol=st.sampled_from(["dev", "paper"]),
    max_train=st.one_of(st.none(), st.integers(-2, 6)),
)
def test_fuzz_custom_files_with_column_options(
    header, rows, ext, raw, task, text, pair, label, validation, protocol, max_train
):
    f = _FUZZ_DIR / f"table{ext}"
    _write_table(f, header, rows, raw)
    try:
        splits = load_splits(
            task,
            train_file=f,
            validation_file=f if validation else None,
            text_column=text,
            text_pair_column=pair,
            label_column=label,
            protocol=protocol,
            max_train_samples=max_train,
        )
    except (DataError, ConfigError) as e:
        assert str(e) and "\n" not in str(e)
        return
    _check_loaded(splits)


@FUZZ
@given(
    data=st.binary(max_size=200),
    ext=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    text=_option,
    pair=_option,
    label=_option,
)
def test_fuzz_random_bytes_with_column_options(data, ext, text, pair, label):
    f = _FUZZ_DIR / f"bytes{ext}"
    f.write_bytes(data)
    for task in ("custom", "stsb"):
        try:
            _check_loaded(
                load_splits(task, train_file=f, text_column=text, text_pair_column=pair, label_column=label)
            )
        except (DataError, ConfigError) as e:
            assert str(e) and "\n" not in str(e)


_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=3),
    st.lists(st.one_of(st.integers(-2, 40), st.booleans(), st.text(max_size=2), st.floats()), max_size=4),
    st.tuples(st.integers(0, 5), st.integers(0, 5)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(Path, st.sampled_from(["a", "b/c", "."])),
    st.sampled_from(["1,2", "1,x", "", "0", "random", "lst", "lora", "dev", "paper", "causal", "custom"]),
)
_TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "task"]
_LADDER_FIELDS = [f.name for f in dataclasses.fields(LadderConfig)]
_some = st.one_of(st.none(), st.sampled_from(["a", "b/c.csv", "text", "label"]))
_ints = {n: st.integers(1, 64) for n in ("reduction_factor", "batch_size", "eval_batch_size", "log_every")}
_ints |= {n: st.one_of(st.none(), st.integers(1, 9)) for n in ("epochs", "max_train_samples", "save_steps")}
# per field, values that pass together (task rte, method lst): one or two fields are then replaced by anything at
# all, so every field's check is reached (with every field random, the first check rejects nearly every example)
VALID_TRAIN = {
    **_ints,
    "backbone": st.sampled_from(["minilm", "org/model", "./folder"]),
    "method": st.just("lst"),
    "side_layers": st.one_of(st.none(), st.lists(st.integers(0, 5), min_size=1, max_size=3)),
    "init": st.sampled_from(["random", "magnitude", "fisher"]),
    "pruning_chain": st.sampled_from(["residual", "authors"]),
    "fisher_samples": st.integers(1, 2048),
    "freeze_layers": st.just(0),
    "lr": st.one_of(st.none(), st.floats(1e-5, 1.0)),
    "warmup_steps": st.one_of(st.none(), st.integers(0, 9)),
    "max_grad_norm": st.floats(0, 5),
    "weight_decay": st.floats(0, 1),
    "seed": st.integers(0, 9),
    "max_eval_samples": st.one_of(st.none(), st.integers(1, 9)),
    "max_length": st.integers(8, 512),
    "protocol": st.sampled_from(["dev", "paper"]),
    "format": st.one_of(st.none(), st.sampled_from(["classification", "text2text", "causal"])),
    "memory_steps": st.integers(0, 3),
    **{n: _some for n in ("data_dir", "train_file", "validation_file", "text_column", "output_dir")},
    **{n: _some for n in ("text_pair_column", "label_column")},
    **{n: st.booleans() for n in ("backbone_dropout", "resume", "trust_remote_code")},
    "overwrite": st.just(False),
}
VALID_LADDER = {
    "reduction_factor": st.integers(1, 64),
    "side_layers": st.one_of(st.none(), st.lists(st.integers(0, 30), min_size=1, max_size=4, unique=True)),
    "gate_temperature": st.floats(0.01, 10),
    "gate_init": st.floats(-5, 5),
    "init": st.sampled_from(["random", "magnitude", "fisher"]),
    "pruning_chain": st.sampled_from(["residual", "authors"]),
    "fisher_samples": st.integers(1, 2048),
    "backbone_dropout": st.booleans(),
    **{n: _some for n in ("backbone_name", "backbone_revision", "backbone_fingerprint")},
    "task_head": st.one_of(
        st.none(), st.sampled_from(["seq2seq_lm", "causal_lm", "sequence_classification"])
    ),
}
assert set(VALID_TRAIN) == set(_TRAIN_FIELDS) and set(VALID_LADDER) == set(_LADDER_FIELDS)


def _fields(valid: dict):
    base = st.fixed_dictionaries({}, optional=valid)
    return st.tuples(base, st.dictionaries(st.sampled_from(sorted(valid)), _anything, max_size=2)).map(
        lambda t: {**t[0], **t[1]}
    )


def _one_line(e: LadderTuneError) -> None:
    assert str(e) and "\n" not in str(e), str(e)


@FUZZ
@given(task=st.one_of(st.just("rte"), st.just("rte"), _anything), fields=_fields(VALID_TRAIN))
def test_fuzz_train_config_values(task, fields):
    try:
        config = TrainConfig(task=task, **fields)
    except ConfigError as e:
        _one_line(e)
        return
    # what is accepted is a plain JSON config that reads back equal (and can be saved next to a run)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@FUZZ
@given(fields=_fields(VALID_LADDER))
def test_fuzz_ladder_config_values(fields):
    try:
        config = LadderConfig(**fields)
    except ConfigError as e:
        _one_line(e)
        return
    assert LadderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=80),
        _json.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"task": _anything.filter(lambda v: not isinstance(v, bytes | Path))},
            optional={n: _json for n in _TRAIN_FIELDS[:12]},
        ).map(lambda d: json.dumps(d, default=str).encode()),
        st.just(b"[" * 100_000),
        st.just(b"1" * 5000),
    ),
    which=st.sampled_from(["train", "ladder"]),
)
def test_fuzz_config_files(content, which):
    folder = _FUZZ_DIR / "config"
    folder.mkdir(exist_ok=True)
    cls, name = (
        (TrainConfig, "train_config.json") if which == "train" else (LadderConfig, "ladder_config.json")
    )
    (folder / name).write_bytes(content)
    try:
        cls.load(folder)
    except ConfigError as e:
        _one_line(e)


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    from laddertune.cli import main

    target = tmp_path / "a-file"
    target.write_text("keep me")
    code = main(["train", "--task", "rte", "--output-dir", str(target), "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "is a file" in err[-1]
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("cls", "name"), [(TrainConfig, "train_config.json"), (LadderConfig, "ladder_config.json")]
)
def test_unknown_field_with_a_newline_is_still_one_line(tmp_path, cls, name):
    """Found by test_fuzz_config_files: a field named "\\n" made the message two lines."""
    (tmp_path / name).write_text('{"task": "rte", "\\n": null}')
    with pytest.raises(ConfigError) as info:
        cls.load(tmp_path)
    assert "\n" not in str(info.value) and "'\\n'" in str(info.value)
