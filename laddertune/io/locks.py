"""Advisory locks between processes: one run per output folder, one build per tap-cache entry.

``fcntl.flock`` on the folder itself (or on a lock file), not a lock file that marks it taken: the kernel drops the
lock when its holder exits, however it exits (``kill -9`` included), so no stale lock outlives a crashed run and
no file is added to the folder. A refused lock names its holder's process id, read from ``/proc/locks`` (Linux)
or, for a lock file, from the id its holder wrote into it. Hand-written: ``filelock`` (installed with
transformers) locks a separate file only and does not say who holds it. A lock file (the tap cache's) is removed
by its holder on release, while still locked; a process that opened the old file re-checks the path after locking.

Locks are re-entrant within a process (a library user may train twice into one folder, one run after the other)
and advisory: they bind laddertune processes, not other programs. ``flock`` is local-filesystem only on some
network filesystems (NFS before Linux 2.6.12 emulates it with POSIX locks).
"""

from __future__ import annotations

import logging
import os
import weakref
from pathlib import Path

from ..errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not guarded against each other there
    fcntl = None

logger = logging.getLogger(__name__)


class _Held:
    """This process's flock on one file: its descriptor, how many :class:`Lock` handles share it, and the lock
    file to remove when the last one lets go (None for a folder)."""

    def __init__(self, fd: int, lock_file: Path | None) -> None:
        self.fd, self.count, self.lock_file = fd, 0, lock_file


_HELD: dict[tuple[int, int], _Held] = {}  # (device, inode) -> the held flock


class Lock:
    """A held lock; :meth:`release` (idempotent) lets it go once every holder in this process has released."""

    def __init__(self, key: tuple[int, int], path: Path, held: _Held | None) -> None:
        self.key, self.path, self.held = key, path, held
        if held is not None:
            held.count += 1

    @property
    def released(self) -> bool:
        return self.held is None or _HELD.get(self.key) is not self.held

    def release(self) -> None:
        if self.released:
            return
        held, self.held = self.held, None
        held.count -= 1
        if held.count <= 0:
            _drop(self.key)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _drop(key: tuple[int, int]) -> None:
    held = _HELD.pop(key, None)
    if held is None:
        return
    if held.lock_file is not None:  # removed while still locked: a process that opened it before re-checks
        try:
            os.unlink(held.lock_file)
        except OSError:
            pass
    os.close(held.fd)  # closing the last descriptor drops the flock


def release_lock(path: str | Path) -> None:
    """Drop this process's lock of ``path`` whatever number of handles hold it (no-op when not held)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    _drop((st.st_dev, st.st_ino))


def _holder(fd: int, path: Path) -> int | None:
    """The process id holding a flock on ``fd``'s file: from ``/proc/locks``, else the id written in the file."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
                    return int(fields[4])
    except OSError:
        pass
    if path.is_file():
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None
    return None


def hold_lock(path: str | Path, what: str, *, owner: object | None = None) -> Lock:
    """Take the exclusive lock of ``path`` (a folder, or a lock file created when missing) without waiting.

    Args:
        path: the folder to lock (it must exist), or a lock file (its parent must exist; the file is removed
            when the lock is released).
        what: how the error names the locked thing ("output folder /x", "tap cache entry y").
        owner: release the lock when this object is garbage collected (besides :meth:`Lock.release`).

    Raises:
        ConfigError: another process holds it (its id in the message), or the path cannot be opened.
    """
    path = Path(path)
    if fcntl is None:
        logger.debug("no fcntl on this system: %s is not locked", what)
        return Lock((0, 0), path, None)
    folder = path.is_dir()
    flags = (os.O_RDONLY | os.O_DIRECTORY) if folder else (os.O_RDWR | os.O_CREAT)
    for _ in range(100):  # a lock file its holder removed between our open and our flock: open the new one
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot lock {what}: {e.strerror or e}") from None
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in _HELD:  # this process holds it already
            os.close(fd)
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(
                e, BlockingIOError
            ):  # a filesystem without flock (some FUSE, old NFS): unguarded
                os.close(fd)
                logger.warning(
                    "cannot lock %s (%s): another run into it would not be stopped", what, e.strerror
                )
                return Lock((0, 0), path, None)
            pid = _holder(fd, path)  # held by another process
            os.close(fd)
            who = f"process {pid}" if pid else "another process"
            raise ConfigError(
                f"{what} is in use by {who} (a laddertune run holds its lock): wait for it to end, or use another "
                "folder"
            ) from None
        if not folder:
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != key:
                os.close(fd)  # we locked a removed file: its holder has let go; try the path again
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # for systems without /proc/locks
        _HELD[key] = _Held(fd, None if folder else path)
        break
    else:
        raise ConfigError(f"cannot lock {what}: its lock file keeps being replaced")
    lock = Lock(key, path, _HELD[key])
    if owner is not None:
        weakref.finalize(owner, lock.release)
    return lock
