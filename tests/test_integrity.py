"""Integrity that cannot be switched off, and run folders whose user files and links survive every command.

The yardstick run and the fixtures are in ``reliability_setup.py``. Each case of a table is one way of breaking a
run folder; each must end in one ``error:`` line with the folder unchanged, or in a run equal to the reference.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from reliability_setup import _copy, _flip, _state, assert_same_as_reference, cli_args, run_config, snapshot
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune import CheckpointError, LadderModel
from laddertune.cli import main
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.io import CHECKSUMS_NAME
from laddertune.training import train
from laddertune.training.checkpoint_folders import foreign_entries, remove_folder


def _one_error_line(rc: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def _rows(path: Path) -> Path:
    path.write_text('{"sentence1": "a cat", "sentence2": "yes yes yes yes"}\n')
    return path


# ----------------------------------------------------------------------- 1. deleting SHA256SUMS switches nothing off

NO_SUMS = {
    "files intact": lambda d: None,
    "one bit flipped": lambda d: _flip(d / WEIGHTS_NAME),
}


@pytest.mark.parametrize("damage", list(NO_SUMS))
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_run_checkpoint_without_checksums_is_refused(assets, reference, tmp_path, capsys, command, damage):
    run = _copy(reference, tmp_path / "run")
    (run / "checkpoint-best" / CHECKSUMS_NAME).unlink()
    NO_SUMS[damage](run / "checkpoint-best")
    before = snapshot(run)
    if command == "predict":
        argv = ["predict", "--checkpoint", str(run), "--input", str(_rows(tmp_path / "in.jsonl"))]
    else:
        argv = ["evaluate", "--checkpoint", str(run), "--data-dir", assets["data"], "--threads", "1"]
    rc = main(argv)
    _one_error_line(
        rc, capsys.readouterr().err, f"checkpoint-best has no {CHECKSUMS_NAME}: it cannot be verified"
    )
    assert snapshot(run) == before


def test_from_pretrained_checks_a_list_when_there_and_loads_a_plain_save_without_one(
    assets, reference, tmp_path
):
    """A run's checkpoint-best carries SHA256SUMS: LadderModel.from_pretrained checks it. A folder that
    save_pretrained wrote (no list, the legacy and library format) still loads."""
    import transformers as T

    backbone = T.BertForSequenceClassification.from_pretrained(assets["bert"])
    best = _copy(reference / "checkpoint-best", tmp_path / "best")
    _flip(best / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="ladder_model.safetensors is corrupt or truncated"):
        LadderModel.from_pretrained(backbone, best)
    plain = tmp_path / "plain"
    LadderModel.from_pretrained(backbone, reference / "checkpoint-best").save_pretrained(plain)
    assert not (plain / CHECKSUMS_NAME).exists()
    LadderModel.from_pretrained(backbone, plain)


# ------------------------------------------------------------ 5. a user's file, a link: never deleted, never followed


def _user_file(folder: str):
    def put(run: Path) -> Path:
        (run / folder).mkdir(
            exist_ok=True
        )  # the interrupted run has no checkpoint-best yet: the user made one
        (run / folder / "notes.txt").write_text("mine")
        return run / folder / "notes.txt"

    return put


# (id, source run, how to break it, extra CLI arguments, the error line)
USER_FILE_CASES = [
    (
        "note in checkpoint-last, --resume",
        "interrupted",
        _user_file("checkpoint-last"),
        ["--resume"],
        "checkpoint-last/notes.txt is no part of a laddertune checkpoint and would be deleted (a resumed run",
    ),
    (
        "note in checkpoint-last.old, --resume",
        "interrupted",
        _user_file("checkpoint-last.old"),
        ["--resume"],
        "checkpoint-last.old/notes.txt is no part of a laddertune checkpoint",
    ),
    (
        "note in checkpoint-best, --resume",
        "interrupted",
        _user_file("checkpoint-best"),
        ["--resume"],
        "checkpoint-best/notes.txt is no part of a laddertune checkpoint",
    ),
    (
        "note in checkpoint-best, --overwrite",
        "reference",
        _user_file("checkpoint-best"),
        ["--overwrite"],
        "checkpoint-best/notes.txt is no part of a laddertune checkpoint and would be deleted (--overwrite",
    ),
    (
        "sub-folder in checkpoint-last, --overwrite",
        "interrupted",
        lambda run: (run / "checkpoint-last" / "eval").mkdir(),
        ["--overwrite"],
        "checkpoint-last/eval is no part of a laddertune checkpoint",
    ),
]


@pytest.mark.parametrize(
    ("source", "put", "extra", "message"),
    [c[1:] for c in USER_FILE_CASES],
    ids=[c[0] for c in USER_FILE_CASES],
)
def test_a_users_file_in_a_checkpoint_folder_is_never_deleted(
    assets, request, tmp_path, capsys, source, put, extra, message
):
    run = _copy(request.getfixturevalue(source), tmp_path / "run")
    put(run)
    before = snapshot(run)
    rc = main(cli_args(assets, run, *extra))
    _one_error_line(rc, capsys.readouterr().err, message)
    assert snapshot(run) == before


def test_resume_library_call_refuses_a_users_file_before_changing_anything(assets, interrupted, tmp_path):
    """The library path (no check_output): a damaged checkpoint-last holding a note is not removed either."""
    from laddertune.training.checkpoint import resume_checkpoint

    run = _copy(interrupted, tmp_path / "run")
    (
        run / "checkpoint-last" / CHECKSUMS_NAME
    ).unlink()  # would fall back to .old and remove checkpoint-last...
    (run / "checkpoint-last" / "notes.txt").write_text("mine")
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="notes.txt is no part of a laddertune checkpoint"):
        resume_checkpoint(run, None, "lst", None, None)
    assert snapshot(run) == before


def _link_out(run: Path, name: str, elsewhere: Path) -> Path:
    shutil.move(run / name, elsewhere)
    os.symlink(elsewhere, run / name)
    return elsewhere


def test_symlinked_checkpoint_last_resumes_and_its_target_is_never_touched(
    assets, reference, interrupted, tmp_path
):
    """checkpoint-last moved to another disk and linked back: resume reads through the link; each later save
    replaces the link (renamed, then unlinked), never the folder it points to; two resumes in a row work."""
    run = _copy(interrupted, tmp_path / "run")
    target = _link_out(run, "checkpoint-last", tmp_path / "elsewhere")
    kept = snapshot(target)

    def stop(record):
        if record["type"] == "train" and record["step"] == 14:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(run_config(assets, run, resume=True), on_record=stop)
    assert snapshot(target) == kept
    assert [_state(run / c)["step"] for c in ("checkpoint-last", "checkpoint-last.old")] == [12, 8]
    train(run_config(assets, run, resume=True))
    assert snapshot(target) == kept and not (run / "checkpoint-last").is_symlink()
    assert_same_as_reference(run, reference)


def test_symlinked_old_checkpoint_is_unlinked_when_the_run_finishes(assets, reference, interrupted, tmp_path):
    run = _copy(interrupted, tmp_path / "run")
    target = _link_out(run, "checkpoint-last.old", tmp_path / "elsewhere")
    kept = snapshot(target)
    train(run_config(assets, run, resume=True))
    assert snapshot(target) == kept and not os.path.lexists(run / "checkpoint-last.old")
    assert_same_as_reference(run, reference)


@pytest.mark.parametrize("name", ["checkpoint-best", "checkpoint-last", "metrics.jsonl"])
def test_overwrite_removes_a_link_not_its_target(assets, reference, tmp_path, capsys, name):
    """--overwrite over a finished run whose checkpoint-best (or a file) is a link: a bad input first (nothing
    changes), then a good run (the link goes, the target stays whole)."""
    run = _copy(reference, tmp_path / "run")
    target = _link_out(run, name, tmp_path / "elsewhere")
    kept, before = snapshot(target) if target.is_dir() else target.read_bytes(), snapshot(run)
    rc = main(cli_args(assets, run, "--overwrite", "--max-length", "4"))
    _one_error_line(rc, capsys.readouterr().err, "max_length must be an integer >= 8")
    assert snapshot(run) == before
    assert main(cli_args(assets, run, "--overwrite")) == 0
    assert (snapshot(target) if target.is_dir() else target.read_bytes()) == kept
    assert not (run / name).is_symlink()
    assert_same_as_reference(run, reference)


def test_remove_folder_and_foreign_entries(tmp_path):
    folder = tmp_path / "checkpoint-last"
    folder.mkdir()
    (folder / WEIGHTS_NAME).write_bytes(b"x")
    (folder / f".{WEIGHTS_NAME}.ab12cd_3.tmp").write_bytes(b"x")  # an atomic write's temporary: ours
    (folder / "extra.bin").write_bytes(b"x")
    (folder / CHECKSUMS_NAME).write_text(f"{'0' * 64}  extra.bin\n")  # listed: ours
    assert foreign_entries(folder) == []
    (folder / ".DS_Store").write_bytes(b"x")
    assert foreign_entries(folder) == [".DS_Store"]
    with pytest.raises(CheckpointError, match=r"\.DS_Store is no part"):
        remove_folder(folder)
    assert (folder / WEIGHTS_NAME).exists()
    (folder / ".DS_Store").unlink()
    link = tmp_path / "link"
    link.symlink_to(folder)
    remove_folder(link)
    assert not os.path.lexists(link) and (folder / WEIGHTS_NAME).exists()
    remove_folder(folder)
    assert not folder.exists()
    remove_folder(tmp_path / "absent")


def test_finished_run_keeps_no_lock_and_no_probe_file(reference):
    assert not [p for p in reference.rglob(".*")]
    assert json.loads((reference / "results.json").read_text())["metrics"]
