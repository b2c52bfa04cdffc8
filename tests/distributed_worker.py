"""A ``torchrun`` worker for tests/test_distributed.py: ``laddertune``'s command line, with one fault to inject.

``LADDERTUNE_TEST_KILL=<ranks>:<step>`` SIGKILLs the listed ranks (e.g. ``1`` or ``0,1``) right after training step
``<step>`` finished (and any checkpoint of that step was written): a rank dying mid-run, deterministically.
"""

from __future__ import annotations

import os
import signal
import sys

from laddertune.cli import main
from laddertune.training.loop import Run

ranks, step = (
    os.environ["LADDERTUNE_TEST_KILL"].split(":") if os.environ.get("LADDERTUNE_TEST_KILL") else ("", 0)
)
after_step = Run.after_step


def after_step_then_die(self, *args, **kwargs):
    after_step(self, *args, **kwargs)
    if self.state.step == int(step) and os.environ.get("RANK") in ranks.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


Run.after_step = after_step_then_die
sys.exit(main())
