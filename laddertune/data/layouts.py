"""Generative data layouts: detect them from the columns and normalise every row into one plain dict.

Layouts (what a row must hold; other columns are ignored):

- ``prompt_completion``: ``prompt`` + ``completion``, or the aliases ``input``/``output``, ``question``/``answer``,
  ``source``/``target``. Normalised to ``{"prompt": str, "completion": str}``.
- ``alpaca``: ``instruction`` [+ ``input``] + ``output``. Normalised to the same dict, with ``prompt`` =
  ``instruction`` alone when ``input`` is missing, empty or blank, else ``f"{instruction}\\n\\n{input}"`` (the
  instruction, a blank line, the input) and ``completion`` = ``output``.
- ``chat``: ``messages`` (a list of ``{"role", "content"}``) or ``conversations`` in ShareGPT form (``{"from",
  "value"}``, roles ``human``/``gpt``/``system``); either key style is read under either column. Roles map to
  ``system``/``user``/``assistant`` (``human`` -> ``user``, ``gpt`` -> ``assistant``). Normalised to ``{"messages":
  [{"role": str, "content": str}, ...]}``.
- ``text``: a plain ``text`` column (continued pre-training: every token is learned). Normalised to ``{"text": str}``.

Every normalised example also holds ``"location"``: the row's ``file:line`` (from :func:`read_rows`), which
later errors name. Every problem is a one-line :class:`DataError` naming the location.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigError, DataError
from .rows import Rows

LAYOUTS = ("prompt_completion", "alpaca", "chat", "text")
PAIRS = (("prompt", "completion"), ("input", "output"), ("question", "answer"), ("source", "target"))
CHAT_COLUMNS = ("messages", "conversations")
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}

__all__ = ["CHAT_COLUMNS", "LAYOUTS", "PAIRS", "ROLES", "detect_layout", "normalize_rows"]

_EXPECTED = (
    "prompt+completion (or input/output, question/answer, source/target), instruction[+input]+output, "
    "messages or conversations, or text"
)


def _candidates(columns: set[str], require_answer: bool) -> dict[str, tuple[str, ...]]:
    """layout -> the columns it would read, for every layout the columns allow (a layout may match twice)."""
    found: dict[str, list[tuple[str, ...]]] = {}
    chat = [c for c in CHAT_COLUMNS if c in columns]
    if chat:
        found["chat"] = [(c,) for c in chat]
    alpaca = "instruction" in columns and ("output" in columns or not require_answer)
    if alpaca:
        found["alpaca"] = [("instruction", "input", "output")]
    pairs = [
        (p, a)
        for p, a in PAIRS
        if p in columns
        and (a in columns or not require_answer)
        and not (alpaca and (p, a) == ("input", "output"))
    ]
    if pairs:
        found["prompt_completion"] = pairs
    if "text" in columns:
        found["text"] = [("text",)]
    return found


def detect_layout(columns: Iterable[str], *, require_answer: bool = True, where: str = "data") -> str:
    """The layout the columns hold (see the module docstring).

    Args:
        columns (Iterable[str]): the column names.
        require_answer (bool): False for prompts without answers (prediction): ``prompt`` alone is then a
            ``prompt_completion`` row, ``instruction`` alone an ``alpaca`` row.
        where (str): what to name in an error (a file or a location).

    Returns:
        str: one of :data:`LAYOUTS`.

    Raises:
        DataError: no layout fits, or more than one does (e.g. ``messages`` beside ``prompt``/``completion``).
    """
    columns = set(columns)
    found = _candidates(columns, require_answer)
    names = ", ".join(sorted(columns)) or "(none)"
    if not found:
        raise DataError(
            f"{where}: no generative data columns; the columns are: {names}; expected {_EXPECTED}"
        )
    matches = [(layout, cols) for layout, options in found.items() for cols in options]
    if len(matches) > 1:
        what = "; ".join(
            f"{layout} ({'+'.join(c for c in cols if c in columns)})" for layout, cols in matches
        )
        raise DataError(f"{where}: ambiguous columns ({names}) fit several layouts: {what}; pass the layout")
    return matches[0][0]


def normalize_rows(
    rows: Rows, layout: str | None = None, *, require_answer: bool = True
) -> tuple[str, list[dict]]:
    """Detect (or take) the layout of ``rows`` and normalise each row.

    Args:
        rows (Rows): ``(location, row)`` pairs from :func:`laddertune.data.read_rows`.
        layout (str | None): one of :data:`LAYOUTS` to skip detection (it still needs its columns).
        require_answer (bool): False for prediction: a missing answer becomes ``""`` (``completion``), and a
            conversation needs no assistant turn.

    Returns:
        tuple[str, list[dict]]: the layout and the examples (see the module docstring), in order.

    Raises:
        ConfigError: an unknown ``layout``.
        DataError: no rows; no layout or several fit; a row with a missing, non-string or empty field, an unknown
            chat role, or a conversation without an assistant turn.
    """
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown data layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not rows:
        raise DataError("no rows to normalise")
    where = rows[0][0]
    columns: set[str] = set()
    for _, row in rows:
        columns.update(k for k, v in row.items() if v is not None)  # Parquet/arrow fill absent keys with None
    if layout is None:
        layout = detect_layout(columns, require_answer=require_answer, where=where)
    options = _candidates(columns, require_answer).get(layout)
    if not options:
        names = ", ".join(sorted(columns)) or "(none)"
        raise DataError(f"{where}: layout {layout} needs other columns; the columns are: {names}")
    cols = options[0]
    if layout == "chat":
        examples = [_chat(loc, row.get(cols[0]), cols[0], require_answer) for loc, row in rows]
    elif layout == "text":
        examples = [{"text": _string(loc, row, "text"), "location": loc} for loc, row in rows]
    elif layout == "alpaca":
        examples = [_alpaca(loc, row, require_answer) for loc, row in rows]
    else:
        p, a = cols
        examples = [
            {
                "prompt": _string(loc, row, p, allow_empty=True),
                "completion": _answer(loc, row, a, require_answer),
                "location": loc,
            }
            for loc, row in rows
        ]
    return layout, examples


def _string(loc: str, row: dict, key: str, *, allow_empty: bool = False) -> str:
    value = row.get(key)
    if value is None:
        raise DataError(f"{loc}: missing column {key!r}")
    if not isinstance(value, str):
        raise DataError(f"{loc}: column {key!r} is not a string (got {type(value).__name__})")
    if not allow_empty and not value.strip():
        raise DataError(f"{loc}: empty {key!r}")
    return value


def _answer(loc: str, row: dict, key: str, require_answer: bool) -> str:
    if not require_answer and row.get(key) is None:
        return ""
    return _string(loc, row, key, allow_empty=not require_answer)


def _alpaca(loc: str, row: dict, require_answer: bool) -> dict:
    instruction = _string(loc, row, "instruction")
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise DataError(f"{loc}: column 'input' is not a string (got {type(extra).__name__})")
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return {"prompt": prompt, "completion": _answer(loc, row, "output", require_answer), "location": loc}


def _chat(loc: str, messages, column: str, require_answer: bool) -> dict:
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if isinstance(messages, list) else f"a {type(messages).__name__}"
        raise DataError(f"{loc}: column {column!r} must be a non-empty list of messages, got {got}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(f"{loc}: message {i} of {column!r} is not an object (got {type(m).__name__})")
        role = m.get("role") if m.get("role") is not None else m.get("from")
        content = m.get("content") if m.get("content") is not None else m.get("value")
        if role not in ROLES:
            raise DataError(
                f"{loc}: message {i} has unknown role {role!r}; expected one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise DataError(f"{loc}: message {i} content is not a string (got {type(content).__name__})")
        role = ROLES[role]
        if role == "assistant" and not content.strip():
            raise DataError(f"{loc}: message {i} is an empty assistant turn")
        out.append({"role": role, "content": content})
    if require_answer and not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{loc}: the conversation has no assistant turn (nothing to learn)")
    return {"messages": out, "location": loc}
