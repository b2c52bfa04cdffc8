"""The schema of ``trainer_state.json``: every field's type and range checked before a resume restores anything.

A hand-edited or damaged state (with a ``SHA256SUMS`` made to match) must not resume silently at a negative step or
past the end of an epoch, nor crash later with a traceback: each problem is one :class:`CheckpointError` line
naming the field, and :func:`laddertune.training.checkpoint.resume_checkpoint` then tries the previous checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_state(
    state,
    directory: Path,
    scheduler_state: dict | None = None,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    accumulation: int = 1,
) -> None:
    """Check the JSON state of a checkpoint (what :func:`~laddertune.training.checkpoint.save_checkpoint` wrote).

    Args:
        state: the parsed ``trainer_state.json``.
        directory: the checkpoint folder (for the message).
        scheduler_state: the live scheduler's ``state_dict()``: the saved one must have its keys and kinds.
        steps_per_epoch, epochs, accumulation: the run's schedule (optimizer steps an epoch, epochs, micro-batches
            a step); with them, ``next_batch`` (a micro-batch) must open a step inside an epoch, ``epoch`` lie inside
            the run, and ``step`` be ``epoch * steps_per_epoch + next_batch // accumulation`` (the loop's invariant).

    Raises:
        CheckpointError: the first field that is missing, of the wrong type or out of range.
    """

    def bad(field: str, what: str) -> CheckpointError:
        return CheckpointError(f"{directory / 'trainer_state.json'}: {field} {what}")

    if not isinstance(state, dict):
        raise bad("the state", f"must be a JSON object, got {type(state).__name__}")
    for key in ("step", "epoch", "next_batch"):
        if key not in state:
            raise bad(key, "is missing")
        if not _is_int(state[key]) or state[key] < 0:
            raise bad(key, f"must be an integer >= 0, got {state[key]!r}")
    if not _is_number(state.get("train_seconds")) or state["train_seconds"] < 0:
        raise bad("train_seconds", f"must be a number >= 0, got {state.get('train_seconds')!r}")
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise bad("history", "must be a list of evaluation records")
    best = state.get("best", ...)
    if best is ...:
        raise bad("best", "is missing")
    if best is not None and not (
        isinstance(best, dict) and _is_number(best.get("score")) and _is_int(best.get("epoch"))
    ):
        raise bad("best", "must be null or a record with a numeric score and an epoch")
    if not isinstance(state.get("scheduler"), dict):
        raise bad("scheduler", "must be a JSON object")
    if scheduler_state is not None:
        saved = state["scheduler"]
        if set(saved) != set(scheduler_state):
            missing = sorted(set(scheduler_state) - set(saved)) or sorted(set(saved) - set(scheduler_state))
            raise bad("scheduler", f"does not fit this run's learning-rate schedule ({missing[0]!r})")
        for key, value in scheduler_state.items():
            if _is_number(value) != _is_number(saved[key]) or isinstance(value, list) != isinstance(
                saved[key], list
            ):
                raise bad(f"scheduler.{key}", f"has the wrong type ({type(saved[key]).__name__})")
    if state.get("grad_scaler") is not None and not isinstance(state["grad_scaler"], dict):
        raise bad("grad_scaler", "must be a JSON object or null")
    if steps_per_epoch is not None:
        k = accumulation  # next_batch counts micro-batches, always at a step's first
        if state["next_batch"] >= steps_per_epoch * k or state["next_batch"] % k:
            raise bad(
                "next_batch",
                f"{state['next_batch']} is not the first micro-batch of a step inside an epoch "
                f"({steps_per_epoch} steps of {k} micro-batches)",
            )
        if epochs is not None and (
            state["epoch"] > epochs or (state["epoch"] == epochs and state["next_batch"] > 0)
        ):
            raise bad("epoch", f"{state['epoch']} is past the end of the run ({epochs} epochs)")
        expected = state["epoch"] * steps_per_epoch + state["next_batch"] // k
        if state["step"] != expected:
            raise bad(
                "step",
                f"{state['step']} does not match epoch {state['epoch']} and next_batch {state['next_batch']} "
                f"({steps_per_epoch} steps an epoch: step {expected})",
            )
