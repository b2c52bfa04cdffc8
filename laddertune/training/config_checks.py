"""The value checks of :class:`~laddertune.training.config.TrainConfig`: each raises a one-line ConfigError naming the
field (``bool`` is never taken for an integer)."""

from __future__ import annotations

import math

from ..errors import ConfigError


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; raises ConfigError naming ``what`` otherwise."""
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers such as 1,2,3; got {text!r}") from None


def check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(name: str, value, positive: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ConfigError(
            f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}"
        )
