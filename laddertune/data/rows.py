"""Read the user's data files (JSONL, CSV, TSV) into raw rows, each with its ``file:line`` for error messages."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import DataError

Rows = list[tuple[str, dict]]  # (location for error messages, raw row)


def read_rows(path: str | os.PathLike) -> Rows:
    """Read a ``.jsonl``/``.json`` (one object a line), ``.csv`` or ``.tsv`` file (header row) into raw rows.

    Raises:
        DataError: missing, unreadable, non-UTF-8, malformed or empty file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise DataError(f"{path}: unknown file type {suffix or '(none)'!r}; use .jsonl, .csv or .tsv")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte offset {e.start})") from None
    rows = _parse_jsonl(text, path) if suffix in (".jsonl", ".json") else _parse_csv(text, path, suffix)
    if not rows:
        raise DataError(f"{path}: no examples in the file")
    return rows


def _parse_jsonl(text: str, path: Path) -> Rows:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: malformed JSON ({e.msg}, column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # e.g. an integer of 5000 digits, or nesting 10^5 deep
            raise DataError(f"{path}:{n}: malformed JSON ({type(e).__name__})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object per line, got a {type(obj).__name__}")
        rows.append((f"{path}:{n}", obj))
    return rows


def _parse_csv(text: str, path: Path, suffix: str) -> Rows:
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",", strict=True
    )
    rows = []
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{path}:1: no header row (the first line must name the columns)")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{path}:1: duplicate column name(s) in the header: {', '.join(dupes)}")
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: {len(row)} fields, but the header has {len(header)}"
                )
            rows.append((f"{path}:{reader.line_num}", dict(zip(header, row, strict=True))))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return rows
