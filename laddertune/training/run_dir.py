"""The run folder: what may be replaced or resumed, what a run owns in it, and its ``metrics.jsonl`` log."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..io import atomic_write_text
from .checkpoint import find_checkpoint
from .config import CONFIG_NAME, TrainConfig

RUN_FILES = ("results.json", "metrics.jsonl", CONFIG_NAME, "checkpoint-last", "checkpoint-best")


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
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.on_record is not None:
            self.on_record(record)


def check_output(config: TrainConfig) -> Path:
    """Check ``output_dir`` without changing it: a finished or unfinished run is replaced only with ``overwrite``
    (or resumed), and resumed only with the same settings."""
    out = Path(config.run.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder")
    finished, started = (out / "results.json").exists(), find_checkpoint(out) is not None
    if finished and not config.run.overwrite:
        hint = "nothing to resume" if config.run.resume else "pass --overwrite to replace it"
        raise ConfigError(f"{out} already holds a finished run (results.json); {hint}")
    if started and not (config.run.overwrite or config.run.resume):
        raise ConfigError(f"{out} holds an unfinished run: --resume continues it, --overwrite starts over")
    if config.run.resume and (out / CONFIG_NAME).is_file():
        diff = config.differences(TrainConfig.load(out))
        if diff:
            raise ConfigError(f"cannot resume {out} with other settings: {', '.join(diff)} differ")
    return out


def claim_output(config: TrainConfig, out: Path) -> None:
    """Create ``out``; with ``overwrite``, first remove the previous run's files (only those)."""
    if config.run.overwrite:  # remove the run's own files only, never anything else in the folder
        for name in RUN_FILES + tuple(
            f"checkpoint-{k}.{s}" for k in ("last", "best") for s in ("old", "tmp")
        ):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output_dir {out}: {e.strerror or e}") from None


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
