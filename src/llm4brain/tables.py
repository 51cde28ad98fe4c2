"""The one reader of the tab-separated tables users bring (events, captions, confounds, participants).

Every value is checked against the column's type before anything uses it, so a malformed file fails with the
file, the row (its line number, the header being line 1) and the column named, never a bare ``ValueError``
from deep inside pandas or numpy.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

NA = {"n/a", ""}  # BIDS writes n/a for a missing value
KINDS = {float: "a finite number", int: "an integer", str: "text"}


class InputError(ValueError):
    """Bad input data (a table, an image); the message names the file and the problem."""


class TableError(InputError):
    """A malformed table; the message names the file and, for a value, its row and column."""


def read_tsv(
    path: str | os.PathLike,
    *,
    columns: Mapping[str, type],
    optional: Mapping[str, type] | None = None,
    nullable: Collection[str] = (),
) -> pd.DataFrame:
    """The table at ``path`` with ``columns`` (required) and ``optional`` columns typed as given (``float``,
    ``int`` or ``str``); other columns are kept as text. A ``nullable`` column may say ``n/a`` (or be empty),
    which becomes NaN (numbers) or None (text); elsewhere a missing value is an error. Blank lines are
    skipped but counted, so row numbers are the file's line numbers.

    Args:
        path: the tab-separated file, UTF-8 (a byte-order mark is allowed) with a header on line 1.
        columns: the required columns, each with its type; a column missing from the header is an error.
        optional: columns typed like ``columns`` when the header has them; None = none.
        nullable: the columns (required or optional) that may say ``n/a`` or be empty.

    Returns:
        The table without its blank lines: ``float`` columns as float64 (NaN for ``n/a``), ``int`` as int64
            (nullable Int64 when one is ``n/a``), ``str`` as text (None for ``n/a``), the others as text;
            ``attrs["rows"]`` holds each row's line in the file (:func:`row_of`).

    Raises:
        TableError: the file cannot be read, is not UTF-8 or is empty, its header repeats or lacks a column,
            a row has more fields than the header, or a value is missing (outside ``nullable``) or not of its
            column's type; the message names the file, the row and the column.
        TypeError: a column's type is not ``float``, ``int`` or ``str``.
    """
    path = Path(path)
    optional = dict(optional or {})
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TableError(f"{path}: cannot read the table ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = raw[: err.start].rsplit(b"\n", 1)[-1].count(b"\t")
        header = raw.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r").split("\t")
        name = f", column {header[column]!r}" if line > 1 and column < len(header) else ""
        raise TableError(
            f"{path}: row {line}{name}: bytes {raw[err.start : err.end]!r} are not UTF-8 (save the file as UTF-8)"
        ) from err
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    if not text.strip():
        raise TableError(f"{path}: empty table (expected a header with columns {sorted(columns)})")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise TableError(f"{path}: row 1: columns {repeated} appear more than once in the header")
    missing = [name for name in columns if name not in header]
    if missing:
        raise TableError(f"{path}: missing columns {missing} (the header has {header})")
    try:
        table = pd.read_csv(
            io.StringIO(text),
            sep="\t",
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            quoting=csv.QUOTE_MINIMAL,
        )
    except pd.errors.ParserError as err:  # a row with more fields than the header
        where = re.search(r"line (\d+), saw (\d+)", str(err))
        what = f"row {where[1]}: {where[2]} fields" if where else str(err).strip()
        raise TableError(f"{path}: {what}, but the header has {len(header)} columns") from err
    rows = pd.Series(np.arange(len(table)) + 2, index=table.index)
    blank = (table == "").all(axis=1) if len(table.columns) else pd.Series(False, index=table.index)
    table, rows = table[~blank], rows[~blank]
    typed = {**{k: v for k, v in optional.items() if k in table.columns}, **columns}
    for name, kind in typed.items():
        table[name] = _convert(path, table[name], rows, name, kind, name in nullable)
    table.attrs["rows"] = rows.tolist()  # file line of each row, for callers' own checks
    return table.reset_index(drop=True)


def row_of(table: pd.DataFrame, index: int) -> int:
    """The file line of ``table``'s row ``index`` (as read by :func:`read_tsv`)."""
    return table.attrs["rows"][index]


def _convert(path: Path, values: pd.Series, rows: pd.Series, name: str, kind: type, nullable: bool) -> pd.Series:
    """``values`` (text) as ``kind``; the first bad value is an error naming its row and column."""
    if kind not in KINDS:
        raise TypeError(f"column {name!r}: unsupported type {kind!r} (float, int or str)")
    stripped = values.str.strip()
    na = stripped.isin(NA)
    if na.any() and not nullable:
        first = na.idxmax()
        raise TableError(
            f"{path}: row {rows[first]}, column {name!r}: missing value {values[first]!r} (expected {KINDS[kind]})"
        )
    if kind is str:
        return values.where(~na, None)
    if kind is int:
        bad = ~na & ~stripped.str.fullmatch(r"[+-]?\d+")
    else:
        bad = ~na & ~np.isfinite(pd.to_numeric(stripped, errors="coerce"))  # "1,5", "nan" and "inf" are refused
    if bad.any():
        first = bad.idxmax()
        raise TableError(f"{path}: row {rows[first]}, column {name!r}: {values[first]!r} is not {KINDS[kind]}")
    if kind is int:
        return stripped.where(~na, None).astype("Int64" if na.any() else np.int64)
    return pd.to_numeric(stripped, errors="coerce").astype(np.float64)  # n/a → NaN
