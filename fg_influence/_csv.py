"""Reading numeric columns from a CSV file for the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

#: Column that R's write.csv uses for row labels; never treated as data.
ROW_LABEL_COLUMN = "rownames"


def read_numeric_csv(path, columns: list[str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Read numeric columns of a CSV file with a header row.

    Parameters
    ----------
    path : str or Path
    columns : list of str, optional
        Columns to read; by default every column whose values are all numeric,
        except ``rownames``.

    Returns
    -------
    data : ndarray, shape (N, D)
    columns : list of str
    row_labels : list of str
        The ``rownames`` column if present, else 1-based row numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CSV file not found: {path}")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows = [row for row in rows if row]
    if not rows:
        raise ValueError(f"CSV file {path} is empty; it needs a header row and data rows")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if not body:
        raise ValueError(f"CSV file {path} has a header but no data rows")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"CSV file {path}, line {number}: expected {len(header)} fields like the header, "
                f"got {len(row)}"
            )
    table = {name: [row[j].strip() for row in body] for j, name in enumerate(header)}
    labels = table.get(ROW_LABEL_COLUMN) or [str(i + 1) for i in range(len(body))]

    if columns is None:
        columns = [name for name in header if name != ROW_LABEL_COLUMN and _all_numeric(table[name])]
        if not columns:
            raise ValueError(f"CSV file {path} has no numeric columns; columns are {header}")
    else:
        unknown = [name for name in columns if name not in table]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown} in {path}; available columns: {header}")
        if len(set(columns)) != len(columns):
            raise ValueError(f"--columns lists a column twice: {columns}")

    data = np.empty((len(body), len(columns)))
    for j, name in enumerate(columns):
        for i, text in enumerate(table[name]):
            try:
                data[i, j] = float(text)
            except ValueError:
                shown = text if text else "an empty field"
                raise ValueError(
                    f"column {name!r} of {path} must be numeric, but row {labels[i]} has {shown!r}; "
                    f"choose numeric columns with --columns or clean the file"
                ) from None
    return data, list(columns), list(labels)


def _all_numeric(values: list[str]) -> bool:
    try:
        for value in values:
            float(value)
    except ValueError:
        return False
    return True
