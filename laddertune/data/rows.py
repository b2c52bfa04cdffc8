"""Read the user's data into raw rows, each with its location (``file:line``) for error messages.

Sources: ``.jsonl``, ``.json`` (a JSON array of objects, or one object a line), ``.csv``/``.tsv`` (header row;
every value a string), ``.parquet``, a folder written by ``datasets``' ``save_to_disk``, or a Hugging Face hub
dataset id (``owner/name``, through ``datasets.load_dataset``). Nested values (lists of message dicts) survive
from every source but CSV/TSV.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from ..errors import DataError

Rows = list[tuple[str, dict]]  # (location for error messages, raw row)

FILE_TYPES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
# a dataset on the hub: owner/name, not a local path and not a data file name
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# names a split may go by in a DatasetDict, for the two splits laddertune asks for
_SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev")}


def read_rows(source: str | os.PathLike, *, split: str = "train", subset: str | None = None) -> Rows:
    """Read one split of the user's data into raw rows.

    Args:
        source (str | os.PathLike): a data file (see the module docstring), a ``save_to_disk`` folder, or a hub
            dataset id ``owner/name``.
        split (str): for a dataset with splits (a ``DatasetDict`` folder or a hub id), the split to read;
            ``validation`` also finds ``valid``, ``val`` or ``dev``. A file or a single-split folder ignores it.
        subset (str | None): a hub dataset's configuration name (``load_dataset(id, subset)``).

    Returns:
        Rows: ``(location, row)`` pairs; the location is ``path:line`` for text files and ``<source> <split> row
        <i>`` (0-based) for Parquet files and datasets.

    Raises:
        DataError: missing, unreadable, non-UTF-8, malformed or empty data; an unknown file type; a hub dataset
            that cannot be loaded (offline, unknown id); a split that is not there.
    """
    path = Path(source)
    if path.is_dir():
        rows = _read_saved_dataset(path, split)
    elif path.is_file() or path.suffix.lower() in FILE_TYPES:
        rows = _read_file(path)
    elif _HUB_ID.fullmatch(str(source)):
        rows = _read_hub(str(source), split, subset)
    else:
        raise DataError(f"{path}: unknown file type {path.suffix or '(none)'!r}; use {', '.join(FILE_TYPES)}")
    if not rows:
        raise DataError(f"{source}: no examples in the {'file' if path.is_file() else 'dataset'}")
    return rows


def _read_file(path: Path) -> Rows:
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise DataError(f"{path}: unknown file type {suffix or '(none)'!r}; use {', '.join(FILE_TYPES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    if suffix == ".parquet":
        return _parse_parquet(raw, path)
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte offset {e.start})") from None
    if suffix == ".json" and text.lstrip().startswith("["):
        return _parse_json_array(text, path)
    if suffix in (".jsonl", ".json"):
        return _parse_jsonl(text, path)
    return _parse_csv(text, path, suffix)


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


def _parse_json_array(text: str, path: Path) -> Rows:
    """A JSON array of objects; each row's location is the line its object starts on.

    Decoded item by item (``raw_decode``) rather than with one ``json.loads``, to know where each object starts.
    """
    decoder, rows = json.JSONDecoder(), []
    ws = re.compile(r"\s*")
    pos = ws.match(text, text.index("[") + 1).end()
    line, counted = 1, 0  # the line of ``pos``, counted incrementally (a large file has many rows)
    try:
        while not text.startswith("]", pos):
            line, counted = line + text.count("\n", counted, pos), pos
            obj, pos = decoder.raw_decode(text, pos)
            if not isinstance(obj, dict):
                raise DataError(
                    f"{path}:{line}: expected a JSON array of objects, got a {type(obj).__name__}"
                )
            rows.append((f"{path}:{line}", obj))
            pos = ws.match(text, pos).end()
            if text.startswith(",", pos):
                pos = ws.match(text, pos + 1).end()
            elif not text.startswith("]", pos):
                raise json.JSONDecodeError("expected ',' or ']'", text, pos)
        pos += 1
    except DataError:
        raise
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        line = text.count("\n", 0, pos) + 1
        raise DataError(f"{path}:{line}: malformed JSON ({type(e).__name__})") from None
    if text[pos:].strip():
        line = text.count("\n", 0, pos) + 1
        raise DataError(f"{path}:{line}: malformed JSON (text after the closing ']')")
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


def _parse_parquet(raw: bytes, path: Path) -> Rows:
    import pyarrow as pa  # installed with datasets
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{path}: not a valid Parquet file ({first})") from None
    return [(f"{path} row {i}", row) for i, row in enumerate(table.to_pylist())]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _pick_split(data, split: str, source: str):
    """One split of a ``DatasetDict`` (``validation`` also as valid/val/dev); a ``Dataset`` as it is."""
    if not hasattr(data, "keys"):
        return data, split
    for name in _SPLIT_NAMES.get(split, (split,)):
        if name in data:
            return data[name], name
    raise DataError(f"{source}: no split {split!r}; the splits are: {', '.join(data.keys()) or '(none)'}")


def _read_saved_dataset(folder: Path, split: str) -> Rows:
    import datasets  # deferred: heavy (pyarrow, fsspec)

    try:
        data = datasets.load_from_disk(str(folder))
    except Exception as e:  # noqa: BLE001 - not a dataset folder, corrupt arrow files: all mean "cannot read it"
        raise DataError(
            f"{folder}: not a dataset folder written by save_to_disk ({_first_line(e)})"
        ) from None
    data, name = _pick_split(data, split, str(folder))
    return [(f"{folder} {name} row {i}", dict(row)) for i, row in enumerate(data)]


def _read_hub(dataset_id: str, split: str, subset: str | None) -> Rows:
    import datasets  # deferred: heavy (pyarrow, fsspec)

    try:
        data = datasets.load_dataset(dataset_id, subset)
    except Exception as e:  # noqa: BLE001 - offline, network, unknown id, scripts: all mean "not from the hub"
        raise DataError(
            f"cannot load dataset {dataset_id!r} from the Hugging Face hub ({_first_line(e)}); "
            "no local file or folder of that name either"
        ) from None
    data, name = _pick_split(data, split, dataset_id)
    return [(f"{dataset_id} {name} row {i}", dict(row)) for i, row in enumerate(data)]
