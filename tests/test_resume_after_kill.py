"""Training survives SIGKILL: killed at seeded random points, ``--resume`` ends on the reference run's exact metrics and side-weight bytes.

The yardstick run and the fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_setup import (
    ENV,
    SLOW_START_S,
    _single_thread,
    assert_same_as_reference,
    cli_args,
    run_config,
)
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune.io import verify_checksums
from laddertune.training import STATE_JSON, checkpoint_candidates, train

WORKER = Path(__file__).with_name(
    "distributed_worker.py"
)  # the CLI, with a kill at a chosen training forward

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


def test_a_kill_between_micro_batches_then_resume_is_bit_identical(assets, tmp_path):
    """Gradient accumulation, 2 micro-batches a step (6 steps an epoch): SIGKILL as the 20th training forward
    starts, the second micro-batch of step 10 (half of its gradients accumulated, none of it saved); checkpoint-last
    holds step 8, in the middle of epoch 2. --resume ends on the uninterrupted run's bytes."""
    reference = tmp_path / "reference"
    _single_thread(lambda: train(run_config(assets, reference, gradient_accumulation_steps=2)))
    out = tmp_path / "run"
    argv = cli_args(assets, out, "--gradient-accumulation-steps", "2")
    env = {**ENV, "LADDERTUNE_TEST_KILL_FORWARD": "20"}
    killed = subprocess.run(
        [sys.executable, str(WORKER), *argv], cwd=tmp_path, env=env, capture_output=True, timeout=SLOW_START_S
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert _max_step(out) == 9 and not (out / "results.json").exists()
    state = json.loads((out / "checkpoint-last" / STATE_JSON).read_text())
    assert (state["step"], state["epoch"], state["next_batch"]) == (
        8,
        1,
        4,
    )  # next_batch counts micro-batches
    assert not _run_until(
        cli_args(assets, out, "--gradient-accumulation-steps", "2", "--resume"), tmp_path, lambda s: False
    )
    assert_same_as_reference(out, reference)
    assert json.loads((out / "results.json").read_text())["timing"]["steps"] == 18
