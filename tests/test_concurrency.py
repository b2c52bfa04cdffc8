"""Two real processes on one output folder, or on one tap cache: the second stops in one line naming the first.

Each first run is paused at a chosen point by ``fault_injection.py`` (it writes a marker file and waits for a release
file), so the second one runs exactly while the first holds its folder: no timing. The yardstick run and the
fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_injection import Fault, inject, start_cli, wait_for
from reliability_setup import ENV, SLOW_START_S, assert_same_as_reference, cli_args, snapshot
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune.io import hold_lock, release_lock


def _pause(target: str, where: Path, at: int = 1) -> Fault:
    return Fault(target, at=at, action="pause", marker=str(where / "paused"), release=str(where / "go"))


def _finish(proc) -> tuple[int, str]:
    _, err = proc.communicate(timeout=SLOW_START_S)
    return proc.returncode, err


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "second", [[], ["--overwrite"], ["--resume"]], ids=["new run", "--overwrite", "--resume"]
)
def test_second_run_into_a_claimed_output_folder_stops_naming_the_first(assets, reference, tmp_path, second):
    """The first run is paused at its first checkpoint (the folder is claimed, training under way); a second run
    into the same folder, whatever its flags, exits 2 with the first's process id and changes nothing; the first
    then finishes as the reference did."""
    out, sync = tmp_path / "run", tmp_path
    first = start_cli(
        cli_args(assets, out), [_pause("laddertune.training.checkpoint:_write_folder", sync)], ENV
    )
    try:
        wait_for(sync / "paused", first, SLOW_START_S)
        before = snapshot(out)
        rc, err = _finish(start_cli(cli_args(assets, out, *second), [], ENV))
        line = _error_line(err)
        assert rc == 2 and f"output_dir {out} is in use by process {first.pid}" in line
        assert snapshot(out) == before
    finally:
        (sync / "go").write_text("")
    rc, err = _finish(first)
    assert rc == 0, err
    assert_same_as_reference(out, reference)


def test_second_run_sharing_a_tap_cache_never_deletes_the_first_ones_build(assets, tmp_path):
    """The first run is paused inside a tap-cache build (at the second backbone batch of its builds); a second run on the same
    cache exits 2 naming it, its build folder untouched; once the first has published the entry, a second run
    reuses it."""
    cache, sync = tmp_path / "cache", tmp_path
    extra = ["--tap-cache", str(cache), "--epochs", "1"]
    first = start_cli(
        cli_args(assets, tmp_path / "a", *extra),
        [_pause("laddertune.taps.store:collect_taps", sync, at=2)],
        ENV,
    )
    try:
        wait_for(sync / "paused", first, SLOW_START_S)
        building = [p.name for p in cache.iterdir() if p.name.startswith(".building-")]
        assert len(building) == 1 and building[0].endswith(f"-{first.pid}")
        rc, err = _finish(start_cli(cli_args(assets, tmp_path / "b", *extra), [], ENV))
        line = _error_line(err)
        assert rc == 2 and "tap cache entry" in line and f"is in use by process {first.pid}" in line
        assert building[0] in [p.name for p in cache.iterdir()]
    finally:
        (sync / "go").write_text("")
    rc, err = _finish(first)
    assert rc == 0, err
    rc, err = _finish(start_cli(cli_args(assets, tmp_path / "b", *extra), [], ENV))
    assert rc == 0, err
    records = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    built = [r["built"] for r in records if r["type"] == "tap_cache" and "built" in r]
    assert built == [False, False]  # train and validation entries: both reused
    assert not [p for p in cache.iterdir() if p.name.startswith(".building-")]


def _try_lock(path: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys; from laddertune.io import hold_lock; from laddertune.errors import ConfigError\n"
        "try:\n    hold_lock(sys.argv[1], 'it')\nexcept ConfigError as e:\n    print(e); sys.exit(2)\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(path)], env=ENV, capture_output=True, text=True)


def test_locks_are_reentrant_in_a_process_and_released_with_their_last_holder(tmp_path):
    folder, lock_file = tmp_path / "run", tmp_path / ".lock-entry"
    folder.mkdir()
    first, second = hold_lock(folder, "it"), hold_lock(folder, "it")  # a library user training twice
    with hold_lock(lock_file, "it"):
        assert lock_file.read_text().strip() == str(os.getpid())
        for path in (folder, lock_file):
            child = _try_lock(path)
            assert child.returncode == 2 and f"it is in use by process {os.getpid()}" in child.stdout
    assert not lock_file.exists()  # removed on release
    first.release()
    first.release()  # idempotent
    assert _try_lock(folder).returncode == 2  # the second handle still holds it
    second.release()
    assert _try_lock(folder).returncode == 0
    release_lock(folder)  # not held: nothing happens


def test_a_filesystem_without_flock_runs_unguarded_with_a_warning(tmp_path, caplog):
    with inject(Fault("fcntl:flock", error=errno.ENOLCK)), caplog.at_level("WARNING", logger="laddertune.io"):
        lock = hold_lock(tmp_path, f"output_dir {tmp_path}")
    assert lock.released and "another run into it would not be stopped" in caplog.text
