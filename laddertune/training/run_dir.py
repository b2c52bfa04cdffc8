"""The run folder: what may be replaced or resumed, what a run owns in it, and its ``metrics.jsonl`` log.

One run at a time per folder: :func:`claim_output` takes an advisory lock on the folder (:mod:`laddertune.io.locks`)
before it changes anything, so a second run into it (training, resuming or ``--overwrite``) stops with one line
naming the first one's process id instead of mixing the two runs' files. The lock goes when the run's process
ends (however it ends), when :func:`release_output` is called, or when the run's :class:`TrainConfig` is freed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError, ConfigError, output_error
from ..io import Lock, atomic_write_text, check_writable, hold_lock, release_lock
from .checkpoint import find_checkpoint
from .checkpoint_folders import check_removable, remove_folder
from .config import CONFIG_NAME, TrainConfig

logger = logging.getLogger(__name__)

RUN_FILES = ("results.json", "metrics.jsonl", CONFIG_NAME, "checkpoint-last", "checkpoint-best")
# every folder a run writes or removes: the checkpoints, their predecessors and temporaries
CHECKPOINT_FOLDERS = tuple(f"checkpoint-{k}{s}" for k in ("last", "best") for s in ("", ".old", ".tmp"))


class MetricsLog:
    """Appends one JSON record a line to ``metrics.jsonl`` and hands each record to an optional callback."""

    def __init__(
        self, path: Path, on_record: Callable[[dict], None] | None = None, write: bool = True
    ) -> None:
        self.path, self.on_record, self.write = (
            path,
            on_record,
            write,
        )  # write=False: a data-parallel rank > 0

    def __call__(self, record: dict) -> None:
        if self.write:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:  # a full disk: one line (a line cut short is dropped on resume)
                raise output_error(self.path, e) from None
        if self.on_record is not None:
            self.on_record(record)


def check_output(config: TrainConfig) -> Path:
    """Check ``output_dir`` without changing it: a finished or unfinished run is replaced only with ``overwrite``
    (or resumed), and resumed only with the same settings; the folder must be writable, and nothing a resumed or
    replaced run would delete may be a user's file (:func:`check_removable`)."""
    out = Path(config.run.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder")
    finished, started = (out / "results.json").exists(), find_checkpoint(out) is not None
    if finished and not config.run.overwrite:
        hint = "nothing to resume" if config.run.resume else "pass --overwrite to replace it"
        raise ConfigError(f"{out} already holds a finished run (results.json); {hint}")
    if started and not (config.run.overwrite or config.run.resume):
        raise ConfigError(f"{out} holds an unfinished run: --resume continues it, --overwrite starts over")
    if config.run.resume and started and not (out / CONFIG_NAME).is_file() and not config.run.force:
        raise ConfigError(
            f"cannot resume {out}: its {CONFIG_NAME} is missing, so its settings cannot be checked (--force resumes "
            "with these)"
        )
    if config.run.resume and (out / CONFIG_NAME).is_file():
        diff = config.differences(TrainConfig.load(out))
        if diff and not config.run.force:
            raise ConfigError(
                f"cannot resume {out} with other settings: {', '.join(diff)} differ (--force resumes with these)"
            )
        if diff:
            logger.warning("resuming %s with other settings (--force): %s differ", out, ", ".join(diff))
    if config.run.overwrite or config.run.resume:
        _check_run_files(
            out, "--overwrite deletes it" if config.run.overwrite else "a resumed run replaces it"
        )
    check_writable(out, f"output_dir {out}")
    return out


def _check_run_files(out: Path, why: str) -> None:
    """One line naming a user's file inside a checkpoint folder the run would delete (a ConfigError)."""
    try:
        for name in CHECKPOINT_FOLDERS:
            check_removable(out / name, why)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None


def claim_output(config: TrainConfig, out: Path) -> Lock:
    """Lock ``out`` for this run (created when missing); with ``overwrite``, then remove the previous run's files
    (only those; links are removed as links, their targets untouched).

    Returns:
        The folder's lock, held until :func:`release_output`, the end of the process, or until ``config`` is
        garbage collected.

    Raises:
        ConfigError: another process holds the folder (its id in the message), the folder cannot be created, or
            a checkpoint folder to remove holds a file laddertune did not write.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output_dir {out}: {e.strerror or e}") from None
    lock = hold_lock(out, f"output_dir {out}", owner=config)
    if config.run.overwrite:  # remove the run's own files only, never anything else in the folder
        _check_run_files(out, "--overwrite deletes it")  # all checked before anything is removed
        for name in RUN_FILES + CHECKPOINT_FOLDERS:
            remove_folder(out / name)
    return lock


def release_output(out: Path) -> None:
    """Let go of ``out``'s lock (call it when the run ends; a no-op when this process does not hold it)."""
    release_lock(out)


def finished_run(out: Path) -> None:
    """After ``results.json``: remove ``checkpoint-last.old`` (a link as a link; a folder holding a user's file is
    kept, with a warning) and release the folder's lock."""
    try:
        remove_folder(out / "checkpoint-last.old")
    except CheckpointError as e:
        logger.warning("%s; kept", e)
    release_output(out)


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop the records written after the checkpoint's step: that work is done again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if record.get("step", 0) <= step and record.get("type") != "diverged":
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
