"""Rows into validated examples, and a custom task's labels inferred from its training rows.

An example is a plain dict ``{"text": str, "text_pair": str | None, "label": int | float}``; every bad row raises a
one-line :class:`DataError` naming its file and line. :func:`infer_custom_spec` decides classification or
regression for the user's own labels (or takes ``problem_type``) and logs what it decided.

Labels that are strings in the file (every CSV label, quoted JSON labels) are class names, compared as written
(after stripping surrounding spaces), unless they are numbers in strict decimal form: an optional ``-``, digits
without a leading zero (``0`` itself allowed), an optional ``.`` and digits (``10``, ``-3``, ``0.25``). Only those
read as numbers, so ``"010"``, ``"1_0"``, ``"+5"``, ``"1e1"``, ``"nan"`` and ``"Infinity"`` are names of classes of
their own, never merged with ``10`` or refused as NaN. JSON numbers are numbers. A column whose labels are all
numbers is a class-id or regression column (see :func:`infer_custom_spec`); any other column is a set of names.
"""

from __future__ import annotations

import logging
import math
import re

from ..errors import DataError, listing
from .rows import Rows
from .tasks import TaskSpec, make_custom_spec

logger = logging.getLogger(__name__)


# a number in strict decimal form (ASCII digits; no sign but "-", no leading zero, no exponent, no "_", no nan/inf)
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


def _is_number(s: str) -> bool:
    """Whether a label string reads as a number (strict decimal form: see the module docstring)."""
    return _DECIMAL.fullmatch(s) is not None


def _text(row: dict, col: str, loc: str) -> str:
    value = row.get(col)
    if value is None:
        raise DataError(f"{loc}: column {col!r} is empty (null)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{loc}: column {col!r} must hold text, got a {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"{loc}: column {col!r} holds a lone surrogate escape (not valid Unicode text)"
        ) from None
    return text


def _raw_label(row: dict, col: str, loc: str) -> int | float | str:
    """The label as a number when it is one (a JSON number, or a string in strict decimal form), else the
    stripped string (a class name)."""
    value = row.get(col)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{loc}: empty label in column {col!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{loc}: label must be a number or a string, got a {type(value).__name__}")
    if isinstance(value, str):
        value = value.strip()
        if not _is_number(value):
            return value
        value = float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{loc}: label is {value} (NaN or infinite)")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    return value


def _label(row: dict, spec: TaskSpec, loc: str) -> int | float:
    value = _raw_label(row, spec.label_column, loc)
    if spec.is_regression:
        if isinstance(value, str):
            raise DataError(f"{loc}: label {value!r} is not a number (task {spec.name} is a regression)")
        value = float(value)
        lo_hi = spec.label_range
        if lo_hi and not lo_hi[0] <= value <= lo_hi[1]:
            raise DataError(f"{loc}: label {value} is outside {spec.name}'s range {lo_hi[0]}..{lo_hi[1]}")
        return value
    key = str(value)
    if key in spec.label_map:
        return spec.label_map[key]
    numeric_names = any(_is_number(n) for n in spec.label_names)  # custom labels mapped from their values
    if isinstance(value, int) and not numeric_names and 0 <= value < spec.num_labels:
        return value
    allowed = listing(f"{i} ({n})" for i, n in enumerate(spec.label_names))
    if numeric_names:
        allowed = listing(spec.label_names)
    raise DataError(f"{loc}: label {value!r} is not in the label set of {spec.name}: {allowed}")


def _check_columns(rows: Rows, columns: list[str]) -> None:
    """Every row must hold every column; name the columns that do exist when one is missing."""
    for loc, row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            have = listing(row) or "(none)"
            raise DataError(f"{loc}: no column {missing[0]!r}; the columns are: {have}")


def to_examples(rows: Rows, spec: TaskSpec) -> list[dict]:
    _check_columns(rows, [*spec.text_columns, spec.label_column])
    pair = spec.text_columns[1] if spec.has_pair else None
    return [
        {
            "text": _text(row, spec.text_columns[0], loc),
            "text_pair": _text(row, pair, loc) if pair else None,
            "label": _label(row, spec, loc),
        }
        for loc, row in rows
    ]


PROBLEM_TYPES = ("regression", "single_label_classification")


def infer_custom_spec(
    rows: Rows,
    text_column: str,
    text_pair_column: str | None,
    label_column: str,
    problem_type: str | None = None,
) -> TaskSpec:
    """Labels from the training rows: integral numbers are class ids (0..999), non-integral ones mean regression,
    strings (or negative/huge ids) are mapped to ids in sorted order, recorded in ``label_names``.

    ``problem_type`` (``regression`` or ``single_label_classification``) overrides the inference, e.g. for
    integer scores 0-5 that are a regression target. What was inferred is logged as a warning, since a wrong
    guess trains the wrong head silently."""
    _check_columns(rows, [text_column, label_column] + ([text_pair_column] if text_pair_column else []))
    values = [_raw_label(row, label_column, loc) for loc, row in rows]
    numbers = [v for v in values if not isinstance(v, str)]
    kw = {"text_pair_column": text_pair_column, "label_column": label_column}
    if problem_type == "regression":
        if len(numbers) != len(values):
            bad = next(v for v in values if isinstance(v, str))
            raise DataError(f"{rows[0][0]}: problem type regression needs numeric labels, got {bad!r}")
        return make_custom_spec(text_column, num_labels=1, **kw)
    classify = problem_type == "single_label_classification"
    if not classify and len(numbers) == len(values) and any(isinstance(v, float) for v in values):
        logger.warning("labels inferred as a regression target (non-integral numbers); see --problem-type")
        return make_custom_spec(text_column, num_labels=1, **kw)
    if (
        len(numbers) == len(values)
        and all(isinstance(v, int) for v in values)
        and min(values) >= 0
        and max(values) < 1000
    ):
        if not classify:
            logger.warning(
                "labels inferred as %d classes (integers 0..%d); pass --problem-type regression if they are "
                "scores", max(2, max(values) + 1), max(values),
            )  # fmt: skip
        return make_custom_spec(text_column, num_labels=max(2, max(values) + 1), **kw)
    if len(numbers) == len(values):
        names = [str(v) for v in sorted(set(values))]
    else:
        names = sorted({str(v) for v in values})
    if len(names) < 2:
        raise DataError(
            f"{rows[0][0]}: only one label value ({names[0]!r}); classification needs two or more"
        )
    return make_custom_spec(text_column, num_labels=len(names), label_names=tuple(names), **kw)
