"""Small real data sets shipped with the package."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """A numeric table with its column names and 1-based row labels."""

    data: np.ndarray
    columns: tuple[str, ...]
    row_labels: tuple[str, ...]
    description: str


def load_faithful() -> Dataset:
    """Old Faithful geyser eruptions (272 rows, R's ``datasets::faithful``).

    Columns: ``eruptions`` (eruption duration, minutes) and ``waiting``
    (waiting time to the next eruption, minutes).
    """
    with resources.files(__package__).joinpath("data/faithful.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    data = np.array([[float(value) for value in row[1:]] for row in body])
    return Dataset(
        data=data,
        columns=tuple(header[1:]),
        row_labels=tuple(row[0] for row in body),
        description="Old Faithful geyser: eruption duration and waiting time (minutes)",
    )


__all__ = ["Dataset", "load_faithful"]
