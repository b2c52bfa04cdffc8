"""``laddertune``'s command line with one fault to inject: a ``torchrun`` worker for tests/test_distributed.py, and a
single process for tests/test_resume_after_kill.py.

``LADDERTUNE_TEST_KILL=<ranks>:<step>`` SIGKILLs the listed ranks (e.g. ``1`` or ``0,1``) right after training step
``<step>`` finished (and any checkpoint of that step was written): a rank dying mid-run, deterministically.
``LADDERTUNE_TEST_KILL_FORWARD=<n>`` SIGKILLs the process as its n-th training forward starts: with gradient
accumulation, between two micro-batches of one optimizer step.
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
forwards = int(os.environ.get("LADDERTUNE_TEST_KILL_FORWARD", "0"))
after_step, build_model = Run.after_step, Run.build_model


def after_step_then_die(self, *args, **kwargs):
    after_step(self, *args, **kwargs)
    if self.state.step == int(step) and os.environ.get("RANK") in ranks.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def build_model_to_die(self):
    build_model(self)
    seen = 0

    def count(module, _args):
        nonlocal seen
        seen += module.training  # evaluation runs in eval mode
        if seen == forwards and module.training:
            os.kill(os.getpid(), signal.SIGKILL)

    self.model.register_forward_pre_hook(count)


Run.after_step = after_step_then_die
if forwards:
    Run.build_model = build_model_to_die
sys.exit(main())
