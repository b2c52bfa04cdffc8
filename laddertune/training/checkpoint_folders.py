"""What laddertune may delete in a run folder: its own checkpoint files, never a user's file, never through a link.

A checkpoint folder is replaced whole at every save (:mod:`laddertune.training.checkpoint`), and ``--overwrite`` and
a resume that falls back to ``checkpoint-last.old`` remove folders. Before any of that, each folder that would go
is checked here: a file laddertune did not write (a user's note left in ``checkpoint-last``) stops the run with one
line naming it, before anything changes; a folder that is a symbolic link is removed as a link (its target is never
touched).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..core.side_checkpoint import INDEX_NAME, WEIGHTS_NAME
from ..errors import CheckpointError
from ..io import CHECKSUMS_NAME, listed_names

# Every file a checkpoint folder of a run may hold (those of older versions included); anything its SHA256SUMS
# lists is also its own.
CHECKPOINT_FILES = frozenset(
    {
        CHECKSUMS_NAME,
        WEIGHTS_NAME,
        INDEX_NAME,  # transformers' index of the side network's weights (what a plain Trainer reloads)
        "generation_config.json",  # an LM head's generation defaults
        "ladder_config.json",
        "vision_config.json",
        "task.json",
        "trainable.safetensors",
        "trainer_state.json",
        "trainer_state.safetensors",
    }
)


# the temporary of an atomic write (laddertune.io.files, tempfile.mkstemp): ".<final name>.<8 random>.tmp"
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp")


def _ours(name: str, listed: set[str]) -> bool:
    temporary = _TEMPORARY.fullmatch(name)
    name = temporary["name"] if temporary else name
    return name in CHECKPOINT_FILES or name in listed


def foreign_entries(folder: str | Path) -> list[str]:
    """The entries of checkpoint folder ``folder`` that laddertune did not write (sorted names; sub-folders too).

    A symbolic link to a folder has none: removing it removes the link alone. A missing folder has none.
    """
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return []
    listed = listed_names(folder)
    return sorted(
        p.name for p in folder.iterdir() if p.is_symlink() or p.is_dir() or not _ours(p.name, listed)
    )


def check_removable(folder: str | Path, why: str = "laddertune replaces this folder at every save") -> None:
    """Raise when removing ``folder`` would delete a file laddertune did not write.

    Raises:
        CheckpointError: one line naming the first such entry and what to do.
    """
    foreign = foreign_entries(folder)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise CheckpointError(
            f"{Path(folder) / foreign[0]}{more} is no part of a laddertune checkpoint and would be deleted ({why}): "
            "move it out of the folder"
        )


def remove_folder(path: str | Path) -> None:
    """Remove a checkpoint folder (or a file of the run) without following links: a link is unlinked, its target
    untouched. A missing path is fine.

    Raises:
        CheckpointError: the folder holds a file laddertune did not write (nothing is removed).
    """
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        check_removable(path)
        shutil.rmtree(path)  # rmtree never follows a link inside the folder either
