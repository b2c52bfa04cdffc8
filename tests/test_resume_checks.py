"""Resume continues the same run only: other data (same task, another folder) or a run folder whose settings cannot be
checked is refused in one line, with nothing changed; --force resumes anyway."""

from __future__ import annotations

import json
import shutil

from reliability_setup import _copy, cli_args, snapshot
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune.cli import main


def _flipped(assets, tmp_path):
    """The run's data folder with every training label flipped: the same task and sizes, other data."""
    data = tmp_path / "flipped"
    shutil.copytree(assets["data"], data)
    path = data / "rte" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "label": 1 - r["label"]}) + "\n" for r in rows))
    return data


def _one_line(rc: int, err: str, needle: str) -> None:
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and needle in err, err


def test_resume_on_other_data_is_refused_and_forced(assets, interrupted, tmp_path, capsys):
    run = _copy(interrupted, tmp_path / "run")
    before = snapshot(run)
    argv = cli_args({**assets, "data": _flipped(assets, tmp_path)}, run, "--resume")
    _one_line(main(argv), capsys.readouterr().err, "its training or validation data differ from these")
    assert snapshot(run) == before
    assert main([*argv, "--force"]) == 0, capsys.readouterr().err
    assert (run / "results.json").is_file()


def test_resume_without_the_runs_settings_is_refused(assets, interrupted, tmp_path, capsys):
    run = _copy(interrupted, tmp_path / "run")
    (run / "train_config.json").unlink()
    before = snapshot(run)
    _one_line(main(cli_args(assets, run, "--resume", "--lr", "0.5")), capsys.readouterr().err, "is missing")
    assert snapshot(run) == before


def test_force_needs_resume_and_threads_must_be_positive(assets, tmp_path, capsys):
    _one_line(
        main(cli_args(assets, tmp_path / "a", "--force")), capsys.readouterr().err, "force applies to resume"
    )
    _one_line(main(cli_args(assets, tmp_path / "b", "--threads", "-3")), capsys.readouterr().err, "--threads")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
