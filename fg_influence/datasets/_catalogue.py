"""Loaders for the regression, count and categorical data sets."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

from . import Dataset


def _read(filename: str) -> tuple[list[str], list[list[str]]]:
    with resources.files(__package__).joinpath(f"data/{filename}").open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _numeric(filename: str, columns: tuple[str, ...], description: str) -> Dataset:
    header, body = _read(filename)
    positions = [header.index(name) for name in columns]
    return Dataset(
        data=np.array([[float(row[j]) for j in positions] for row in body]),
        columns=columns,
        row_labels=tuple(row[0] for row in body),
        description=description,
    )


def load_stackloss() -> Dataset:
    """Brownlee's stack loss plant data (21 rows, R's ``datasets::stackloss``).

    Columns: ``Air.Flow``, ``Water.Temp``, ``Acid.Conc.`` and the response
    ``stack.loss``. Rows 1, 3, 4 and 21 (1-based) are the known unusual rows.
    """
    return _numeric(
        "stackloss.csv", ("Air.Flow", "Water.Temp", "Acid.Conc.", "stack.loss"),
        "Stack loss of an ammonia oxidation plant with air flow, water temperature and acid concentration",
    )


def load_biochemists() -> Dataset:
    """Articles published by 915 biochemistry PhD students (R's ``pscl::bioChemists``).

    Numeric columns: ``art`` (articles in the last 3 years of the PhD),
    ``kid5``, ``phd`` (prestige of the department) and ``ment`` (articles by
    the mentor).
    """
    return _numeric(
        "bioChemists.csv", ("art", "kid5", "phd", "ment"),
        "Article counts of biochemistry PhD students with covariates",
    )


@dataclass(frozen=True)
class CategoricalDataset:
    """A table of categorical columns coded 0..C_d - 1, with the category names of each column."""

    codes: np.ndarray
    columns: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    row_labels: tuple[str, ...]
    description: str


def load_titanic() -> CategoricalDataset:
    """Class, age group, sex and survival of 1316 Titanic passengers (crew excluded).

    ``codes`` has shape (1316, 4); column d's code c means
    ``categories[d][c]``, with categories in sorted order.
    """
    header, body = _read("titanic.csv")
    columns = ("class", "age", "sex", "survived")
    codes = np.empty((len(body), len(columns)), dtype=np.int64)
    categories = []
    for d, name in enumerate(columns):
        values = [row[header.index(name)] for row in body]
        names, codes[:, d] = np.unique(values, return_inverse=True)
        categories.append(tuple(str(value) for value in names))
    return CategoricalDataset(
        codes=codes,
        columns=columns,
        categories=tuple(categories),
        row_labels=tuple(row[0] for row in body),
        description="Titanic passengers: class, age group, sex and survival",
    )
