"""Reading numeric columns from a CSV file for the command line."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path

import numpy as np

#: Column of row labels, as in the bundled faithful.csv. It is never treated as
#: data, because the default selection skips it and ``columns`` must not name it.
ROW_LABEL_COLUMN = "rownames"


def read_numeric_csv(path, columns: list[str] | None = None, *,
                     column_options: dict[str, str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Read numeric columns of a CSV file with a header row.

    The file is decoded as UTF-8, skipping a leading byte order mark.

    Parameters
    ----------
    path : str or Path
    columns : list of str, optional
        Columns to read; by default every column whose values are all numeric,
        except ``rownames``.
    column_options : dict of str to str, optional
        The command-line option that named each column, such as
        ``{"y": "--target"}``, so that the error for a non-numeric column
        names it. Columns not listed are taken to come from ``--columns``.

    Returns
    -------
    data : ndarray, shape (N, D)
    columns : list of str
    row_labels : list of str
        The ``rownames`` column if present, else 1-based row numbers.

    Raises
    ------
    ValueError
        If the file is missing, unreadable, not UTF-8, has no data rows, has
        rows of the wrong length or repeated header names, or if a requested
        column is unknown, ``rownames``, not numeric or not finite.
    """
    path = Path(path)
    header, body, lines = read_csv_rows(path)
    table = {name: [row[j].strip() for row in body] for j, name in enumerate(header)}
    labels = table.get(ROW_LABEL_COLUMN) or [str(i + 1) for i in range(len(body))]

    if columns is None:
        columns = [name for name in header
                   if name != ROW_LABEL_COLUMN and _numeric_column(table[name], name, path, lines)]
        if not columns:
            raise separator_error(path, header) or ValueError(
                f"CSV file {path} has no numeric columns; columns are {header}")
    else:
        unknown = [name for name in columns if name not in table]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown} in {path}; available columns: {header}")
        if len(set(columns)) != len(columns):
            raise ValueError(f"--columns lists a column twice: {columns}")
        if ROW_LABEL_COLUMN in columns:
            raise ValueError(
                f"column {ROW_LABEL_COLUMN!r} of {path} contains row labels, not data; "
                f"remove it from --columns"
            )

    data = np.empty((len(body), len(columns)))
    for j, name in enumerate(columns):
        for i, text in enumerate(table[name]):
            try:
                data[i, j] = float(text)
            except ValueError:
                field = repr(text) if text else "an empty field"
                raise ValueError(
                    f"column {name!r} of {path} must be numeric, but line {lines[i]} has {field}; "
                    f"{_numeric_advice(name, column_options)}"
                ) from None
            if not np.isfinite(data[i, j]):
                raise ValueError(
                    f"column {name!r} of {path} must contain only finite values, but line "
                    f"{lines[i]} has {text!r}; remove or impute missing values first"
                )
    return data, list(columns), list(labels)


def read_csv_rows(path) -> tuple[list[str], list[list[str]], list[int]]:
    """Read a CSV file with a header row, with the file checks that every CSV reader here shares.

    The file is decoded as UTF-8, skipping a leading byte order mark, and
    blank lines are skipped.

    Returns
    -------
    header : list of str
        The column names, stripped of surrounding spaces.
    body : list of list of str
        The data rows as read, each with as many fields as the header.
    lines : list of int
        The CSV line on which each data row ends, counting the header as
        line 1 and including blank lines.

    Raises
    ------
    ValueError
        If the file is missing, a directory, unreadable or not UTF-8, has no
        header or no data rows, repeats a header name, or has a row whose
        number of fields differs from the header's.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass the path of a CSV file")
    if not path.is_file():
        raise ValueError(f"CSV file not found: {path}")
    try:
        # utf-8-sig drops the byte order mark that spreadsheet programs often
        # write. Read as plain UTF-8, the mark would join the first column's name.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows, lines = read_nonempty_rows(handle)
    except UnicodeDecodeError as error:
        position = _first_invalid_byte(path)
        where = "" if position is None else f" at line {position[0]}, byte {position[1]}"
        raise ValueError(
            f"CSV file {path} is not valid UTF-8 ({error.reason}){where}; save it with UTF-8 encoding"
        ) from None
    except OSError as error:
        raise ValueError(f"could not read CSV file {path}: {error.strerror or error}") from None
    if not rows:
        raise ValueError(f"CSV file {path} is empty; it needs a header row and data rows")
    header, body, lines = [name.strip() for name in rows[0]], rows[1:], lines[1:]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(
            f"CSV file {path} repeats the header name(s) {repeated}; give every column a unique name"
        )
    if not body:
        raise ValueError(f"CSV file {path} has a header but no data rows")
    for number, row in zip(lines, body):
        if len(row) != len(header):
            raise ValueError(
                f"CSV file {path}, line {number}: expected {len(header)} fields like the header, "
                f"got {len(row)}"
            )
    return header, body, lines


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_nonempty_rows(handle) -> tuple[list[list[str]], list[int]]:
    """Read the non-empty CSV records of an open file and the line on which each ends.

    Line numbers count the header as line 1 and include skipped blank lines,
    so they match what a text editor or spreadsheet shows.
    """
    reader = csv.reader(handle)
    rows, lines = [], []
    for row in reader:
        if row:
            rows.append(row)
            lines.append(reader.line_num)
    return rows, lines


def _numeric_advice(name: str, column_options: dict[str, str] | None) -> str:
    """Advice for a non-numeric column, naming the option that selected it (--columns by default)."""
    option = (column_options or {}).get(name, "--columns")
    if option == "--columns":
        return "choose numeric columns with --columns or clean the file"
    return f"pass a numeric column to {option} or clean the file"


def _numeric_column(values: list[str], name: str, path, lines: list[int]) -> bool:
    """Return whether a column is numeric: True if every value parses as a number,
    False if none does (a text column). A column with both, or with missing
    fields among numbers, raises ValueError, because dropping it silently
    would fit a different model than the user expects."""
    parsed = [_parses_as_float(value) for value in values]
    if all(parsed):
        return True
    non_missing = [ok for ok, value in zip(parsed, values) if value not in MISSING_VALUES]
    if not any(non_missing):
        return False
    bad = next(i for i, ok in enumerate(parsed) if not ok)
    shown = repr(values[bad]) if values[bad] else "an empty field"
    raise ValueError(
        f"column {name!r} of {path} is numeric except at line {lines[bad]} ({shown}); remove or "
        f"impute the missing or non-numeric values, or leave the column out with --columns"
    )


#: Field values read as missing by ``read_csv_table``: empty and R's NA.
MISSING_VALUES = ("", "NA", "NaN", "nan")


def separator_error(path, header) -> ValueError | None:
    """Return the error for a file whose only column name contains semicolons or tabs, else None."""
    if len(header) == 1 and any(mark in header[0] for mark in (";", "\t")):
        return ValueError(
            f"CSV file {path} has a single column {header[0]!r}, so it seems to be separated by "
            f"semicolons or tabs; fg-influence reads comma-separated files, so save it with commas"
        )
    return None


def read_csv_table(path, columns: list[str], *, missing: str = "raise",
                   line_numbers: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    """Read the named columns of a CSV file with a header row as text, for categorical data.

    Parameters
    ----------
    path : str or Path
    columns : list of str
        Columns to read, in order; ``rownames`` labels the rows and cannot be one of them.
    missing : {"raise", "drop"}
        What to do with rows where a requested column is empty or ``NA``:
        raise a ValueError naming the first such row, or drop them with a
        UserWarning giving their count.

    Returns
    -------
    table : dict of str to list of str
        The stripped field values of each requested column, rows with missing values removed.
    row_labels : list of str
        The ``rownames`` column if present, else 1-based row numbers, for the rows kept.
    lines : list of int
        Returned only with ``line_numbers=True``: the CSV line of each row
        kept, counting the header as line 1.

    Raises
    ------
    ValueError
        For the file problems that :func:`read_csv_rows` checks, with the
        same messages as :func:`read_numeric_csv`; if a requested column is
        unknown, ``rownames`` or requested twice; if ``missing="raise"`` and
        a row has a missing value; or if no row is left after dropping.
    """
    import warnings

    if missing not in ("raise", "drop"):
        raise ValueError(f'missing must be "raise" or "drop", got {missing!r}')
    path = Path(path)
    header, body, lines = read_csv_rows(path)
    unknown = [name for name in columns if name not in header]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown} in {path}; available columns: {header}")
    if ROW_LABEL_COLUMN in columns:
        raise ValueError(f"column {ROW_LABEL_COLUMN!r} of {path} contains row labels, not data; choose other columns")
    if len(set(columns)) != len(columns):
        raise ValueError(f"a column is requested twice: {columns}")
    positions = [header.index(name) for name in columns]
    label_position = header.index(ROW_LABEL_COLUMN) if ROW_LABEL_COLUMN in header else None
    labels = [row[label_position].strip() if label_position is not None else str(i + 1) for i, row in enumerate(body)]
    incomplete = [i for i, row in enumerate(body) if any(row[j].strip() in MISSING_VALUES for j in positions)]
    # The columns with a gap in some row, for the messages below.
    gapped = [name for name, j in zip(columns, positions)
              if any(body[i][j].strip() in MISSING_VALUES for i in incomplete)]
    if incomplete and missing == "raise":
        first = body[incomplete[0]]
        empty = [name for name, j in zip(columns, positions) if first[j].strip() in MISSING_VALUES]
        raise ValueError(
            f"{len(incomplete)} row(s) of {path} have missing values in {gapped}, the first is on line "
            f"{lines[incomplete[0]]} (missing {empty}); drop them with --missing drop or impute them first"
        )
    if incomplete:
        warnings.warn(
            f"dropped {len(incomplete)} row(s) with missing values in {gapped} from {path}, "
            f"leaving {len(body) - len(incomplete)} of {len(body)} rows",
            UserWarning,
            stacklevel=2,
        )
    dropped = set(incomplete)
    kept = [i for i in range(len(body)) if i not in dropped]
    if not kept:
        raise ValueError(f"every row of {path} has a missing value in {columns}; nothing is left to fit")
    table = {name: [body[i][j].strip() for i in kept] for name, j in zip(columns, positions)}
    if line_numbers:
        return table, [labels[i] for i in kept], [lines[i] for i in kept]
    return table, [labels[i] for i in kept]


def numeric_column(values: list[str], name: str, lines: list[int], option: str = "--columns") -> np.ndarray:
    """Convert one column's text to finite float64, raising a ValueError naming the first bad line.

    ``lines`` contains the CSV line of each value, and ``option`` is the
    command-line option that named the column.
    """
    array = np.empty(len(values))
    for i, text in enumerate(values):
        try:
            array[i] = float(text)
        except ValueError:
            raise ValueError(
                f"column {name!r} must be numeric, but line {lines[i]} has {text!r}; "
                f"{_numeric_advice(name, {name: option})}"
            ) from None
        if not np.isfinite(array[i]):
            raise ValueError(f"column {name!r} must be finite, but line {lines[i]} has {text!r}; "
                             f"remove or impute the value first")
    return array


def _first_invalid_byte(path: Path) -> tuple[int, int] | None:
    """Return the line and the byte within it (both from 1) where ``path`` stops being UTF-8, or None.

    A text stream reports positions within its buffer, so the bytes are
    decoded again here, after a leading byte order mark.
    """
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        start = error.start
        return data.count(b"\n", 0, start) + 1, start - (data.rfind(b"\n", 0, start) + 1) + 1
    # The file changed after the failed read, so there is no position to report.
    return None
