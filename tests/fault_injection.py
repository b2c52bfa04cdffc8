"""Fault injection for the tests: at the n-th call of a named function, raise, kill the process, or pause it.

A fault names its function as ``"module:attribute.path"`` (``"pathlib:Path.rename"``, ``"os:replace"``,
``"laddertune.io.tensors:save_file"``) and counts only the calls whose arguments mention ``match`` (a file name, say),
so "kill before the second rename of checkpoint-last.tmp" reads as
``Fault("pathlib:Path.rename", match="checkpoint-last.tmp", at=2, action="kill")``.

In this process: ``with inject(fault): ...`` (the function is restored afterwards). In a child process:
:func:`run_cli` / :func:`run_python` pass the faults as JSON in ``LADDERTUNE_TEST_FAULTS`` and arm them before
laddertune is imported. ``kill`` sends SIGKILL to the process itself: nothing runs after it (no ``finally``, no
``atexit``), as with an OOM kill or a power cut. ``pause`` writes the file ``marker`` and waits until the file
``release`` exists, so that a test can run something else at that exact point without any timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV_NAME = "LADDERTUNE_TEST_FAULTS"
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
_INHERITED = object()
_ARMED: list = []
PAUSE_LIMIT_S = 600  # a paused child gives up waiting after this (a failed test must not hang forever)


@dataclasses.dataclass
class Fault:
    """What to do at the ``at``-th call (counted from 1) of ``target`` whose arguments mention ``match``.

    Attributes:
        target: ``"module:attribute.path"`` of the function to wrap.
        at: the call that triggers it.
        action: ``raise`` (``error``), ``kill`` (SIGKILL to this process) or ``pause`` (``marker``/``release``).
        when: ``before`` or ``after`` the real call.
        match: count only calls with this text in the ``str`` of an argument (None: every call).
        error: for ``raise``: an errno (``OSError(errno, strerror)``, e.g. ``errno.ENOSPC``) or the name of a
            builtin exception (``"KeyboardInterrupt"``).
        marker, release: for ``pause``: the file written on arrival, the file awaited before going on.
    """

    target: str
    at: int = 1
    action: str = "raise"
    when: str = "before"
    match: str | None = None
    error: int | str = errno.ENOSPC
    marker: str | None = None
    release: str | None = None

    def exception(self) -> BaseException:
        if isinstance(self.error, int):
            return OSError(self.error, os.strerror(self.error))
        return getattr(__import__("builtins"), self.error)()


def _resolve(target: str):
    module_name, _, path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, name


def _fire(fault: Fault) -> None:
    if fault.action == "kill":
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.action == "pause":
        Path(fault.marker).write_text(str(os.getpid()))
        deadline = time.monotonic() + PAUSE_LIMIT_S
        while not Path(fault.release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    raise fault.exception()


def _wrap(fault: Fault, real, state: dict):
    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        mentioned = fault.match is None or any(fault.match in str(a) for a in (*args, *kwargs.values()))
        hit = False
        if mentioned:
            state["calls"] += 1
            hit = state["calls"] == fault.at
        if hit and fault.when == "before":
            _fire(fault)
        result = real(*args, **kwargs)
        if hit and fault.when == "after":
            _fire(fault)
        return result

    return wrapper


@contextlib.contextmanager
def inject(*faults: Fault):
    """Arm ``faults`` in this process for the ``with`` block; yields ``{target: {"calls": n}}``, counted live."""
    undo, counts = [], {}
    try:
        for fault in faults:
            owner, name = _resolve(fault.target)
            own = vars(owner).get(name, _INHERITED) if isinstance(owner, type) else getattr(owner, name)
            state = counts.setdefault(fault.target, {"calls": 0})
            setattr(owner, name, _wrap(fault, getattr(owner, name), state))
            undo.append((owner, name, own))
        yield counts
    finally:
        for owner, name, own in reversed(undo):
            if own is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


def arm_from_env() -> None:
    """Arm the faults of ``$LADDERTUNE_TEST_FAULTS`` for the rest of this process (a child's first act)."""
    faults = [Fault(**f) for f in json.loads(os.environ.get(ENV_NAME, "[]"))]
    armed = inject(*faults)
    armed.__enter__()
    _ARMED.append(armed)  # a dropped generator would close, and its finally would disarm the faults


_BOOT = (
    "import sys; sys.path.insert(0, {tests!r}); import fault_injection; fault_injection.arm_from_env(); "
    "sys.argv = ['laddertune', *sys.argv[1:]]; "
)


def _env(base: dict, faults: list[Fault]) -> dict:
    env = {**base, ENV_NAME: json.dumps([dataclasses.asdict(f) for f in faults])}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [base.get("PYTHONPATH"), str(ROOT)]))
    return env


def start_cli(argv: list, faults: list[Fault], env: dict, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``laddertune <argv>`` in a child process with ``faults`` armed; stdout/stderr are pipes (text)."""
    code = _BOOT.format(tests=str(TESTS)) + "from laddertune.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, argv)],
        env=_env(env, faults),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(argv: list, faults: list[Fault], env: dict, timeout: float, cwd: Path | None = None):
    """:func:`start_cli` and wait: ``(returncode, stdout, stderr)``; a SIGKILLed child returns ``-9``."""
    proc = start_cli(argv, faults, env, cwd)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until ``path`` exists (a paused child's marker); fail at once if the child ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"the child ended (rc {proc.returncode}) before {path.name}: {proc.stderr.read()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)
