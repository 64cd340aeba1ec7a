"""Metadata files that list a dataset's clips: JSONL or CSV, one clip per row.

Required columns: path, caption. Optional: fps, num_frames, height, width, split. Other columns
are kept as they are.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from reel.errors import ReelError

REQUIRED_COLUMNS = ("path", "caption")
TYPED_COLUMNS = {"fps": float, "num_frames": int, "height": int, "width": int, "split": str}
FORMATS = (".jsonl", ".csv")


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ReelError(f"{path}: metadata must be a .jsonl or .csv file, not '{suffix or path.name}'")
    return suffix


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    """(location, raw row) pairs; the location is file:line, for error messages."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReelError(f"{where}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ReelError(f"{where}: each line must be a JSON object, got {type(row).__name__}")
            rows.append((where, row))
    return rows


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in REQUIRED_COLUMNS:
            if column not in header:
                raise ReelError(f"{path}: missing required column '{column}' in the CSV header")
        # the header is line 1, so the first row is line 2 (rows with embedded newlines aside)
        return [(f"{path}:{number}", dict(row)) for number, row in enumerate(reader, start=2)]


def _typed(value: Any, column: str, kind: type, where: str) -> Any:
    if value is None or value == "":
        return None
    try:
        if kind is int and isinstance(value, str):
            return int(float(value))  # CSV writers often print 120 as 120.0
        return kind(value)
    except (TypeError, ValueError):
        raise ReelError(f"{where}: column '{column}' must be {kind.__name__}, got {value!r}") from None


def _clean_row(raw: dict, where: str, base: Path) -> dict:
    for column in REQUIRED_COLUMNS:
        if column not in raw or raw[column] is None:
            raise ReelError(f"{where}: missing required column '{column}'")
    row = dict(raw)
    if not str(row["path"]).strip():
        raise ReelError(f"{where}: column 'path' is empty")
    row["path"] = str(base / os.path.expanduser(str(row["path"])))
    row["caption"] = str(row["caption"])
    for column, kind in TYPED_COLUMNS.items():
        if column in row:
            value = _typed(row[column], column, kind, where)
            if value is None:
                del row[column]
            else:
                row[column] = value
    return row


def load_metadata(path: str | os.PathLike, root: Optional[str | os.PathLike] = None) -> list[dict]:
    """Rows of a .jsonl or .csv metadata file, with absolute paths and typed optional columns.

    Relative clip paths resolve against `root`, or the metadata file's folder when root is None.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise ReelError(f"{path}: metadata file not found")
    base = Path(root).expanduser().absolute() if root is not None else path.absolute().parent
    raw_rows = _read_jsonl(path) if fmt == ".jsonl" else _read_csv(path)
    return [_clean_row(raw, where, base) for where, raw in raw_rows]


def _columns_of(rows: list[dict]) -> list[str]:
    columns = list(REQUIRED_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def _write_jsonl(f, rows: list[dict]) -> None:
    for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_csv(f, rows: list[dict]) -> None:
    writer = csv.DictWriter(f, fieldnames=_columns_of(rows), restval="")
    writer.writeheader()
    writer.writerows(rows)


def write_metadata(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows as JSONL (or CSV when the name ends in .csv), replacing the file atomically."""
    path = Path(path)
    fmt = _format_of(path)
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a reader (or a crash) never sees half a file: write beside it, then rename over it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            (_write_jsonl if fmt == ".jsonl" else _write_csv)(f, rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
