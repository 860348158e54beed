"""Loaders for the grouped data sets shipped with the package (one site per group)."""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np


def read_table(filename: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file in the package's data folder."""
    with resources.files(__package__).joinpath(f"data/{filename}").open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def numeric_columns(header: list[str], body: list[list[str]], names: tuple[str, ...]) -> np.ndarray:
    """The named columns as a float array, shape (n_rows, len(names))."""
    positions = [header.index(name) for name in names]
    return np.array([[float(row[j]) for j in positions] for row in body])
