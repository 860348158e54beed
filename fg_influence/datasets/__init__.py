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


def load_radon() -> Dataset:
    """Log radon in 919 Minnesota homes in 85 counties (Gelman and Hill 2007, R's ``HLMdiag::radon``).

    Columns: ``log.radon``, ``basement`` (1 if measured in the basement),
    ``uranium`` (log county uranium) and ``county`` (county number 1-85,
    the group of a hierarchical model).
    """
    from ._grouped import numeric_columns, read_table

    header, body = read_table("radon.csv")
    columns = ("log.radon", "basement", "uranium", "county")
    return Dataset(
        data=numeric_columns(header, body, columns),
        columns=columns,
        row_labels=tuple(row[0] for row in body),
        description="Log radon in Minnesota homes with basement indicator, county uranium and county",
    )


def load_sleepstudy() -> Dataset:
    """Reaction times of 18 subjects over 10 days of sleep deprivation (R's ``lme4::sleepstudy``).

    Columns: ``Reaction`` (mean reaction time, ms), ``Days`` (days of sleep
    deprivation, 0-9) and ``Subject`` (subject number, the group).
    """
    from ._grouped import numeric_columns, read_table

    header, body = read_table("sleepstudy.csv")
    columns = ("Reaction", "Days", "Subject")
    return Dataset(
        data=numeric_columns(header, body, columns),
        columns=columns,
        row_labels=tuple(row[0] for row in body),
        description="Sleep deprivation study: reaction time (ms) by day and subject",
    )


def _read_rows(filename: str) -> tuple[list[str], list[list[str]]]:
    with resources.files(__package__).joinpath(f"data/{filename}").open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def load_iris() -> Dataset:
    """Fisher's iris measurements (150 rows, R's ``datasets::iris``), numeric columns only.

    Columns: ``Sepal.Length``, ``Sepal.Width``, ``Petal.Length`` and
    ``Petal.Width`` (cm). The species column (50 rows each of setosa,
    versicolor and virginica, in that order) is left out.
    """
    header, body = _read_rows("iris.csv")
    return Dataset(
        data=np.array([[float(value) for value in row[1:5]] for row in body]),
        columns=tuple(header[1:5]),
        row_labels=tuple(row[0] for row in body),
        description="Fisher's iris: sepal and petal length and width (cm) of three species",
    )


def load_galaxies() -> Dataset:
    """Velocities of 82 galaxies in the Corona Borealis region (Roeder 1990, R's ``MASS::galaxies``).

    One column, ``dat`` (velocity, km/s); ``data`` has shape (82, 1).
    """
    header, body = _read_rows("galaxies.csv")
    return Dataset(
        data=np.array([[float(row[1])] for row in body]),
        columns=(header[1],),
        row_labels=tuple(row[0] for row in body),
        description="Galaxy velocities (km/s) in the Corona Borealis region",
    )


@dataclass(frozen=True)
class MaskedDataset(Dataset):
    """A numeric table with missing values stored as NaN and a mask of the complete rows."""

    complete: np.ndarray


def load_penguins() -> MaskedDataset:
    """Palmer penguins (344 rows, R's ``palmerpenguins::penguins``), numeric measurements only.

    Columns: ``bill_length_mm``, ``bill_depth_mm``, ``flipper_length_mm`` and
    ``body_mass_g``. Missing values are NaN; ``complete`` is True for the
    rows that have all four, so ``data[complete]`` is ready to fit.
    """
    header, body = _read_rows("penguins.csv")
    columns = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
    positions = [header.index(name) for name in columns]
    data = np.array([[float(row[j]) if row[j] not in ("", "NA") else np.nan for j in positions]
                     for row in body])
    return MaskedDataset(
        data=data,
        columns=columns,
        row_labels=tuple(row[0] for row in body),
        description="Palmer penguins: bill length and depth, flipper length (mm) and body mass (g)",
        complete=~np.isnan(data).any(axis=1),
    )


def load_epil() -> Dataset:
    """Seizure counts of 59 epilepsy patients over 4 two-week periods (R's ``MASS::epil``).

    Columns: ``y`` (seizure count), ``subject`` (1-59, one sequence per
    patient), ``period`` (1-4), ``base`` (baseline count over 8 weeks) and
    ``age``.
    """
    from ._grouped import numeric_columns, read_table

    header, body = read_table("epil.csv")
    columns = ("y", "subject", "period", "base", "age")
    return Dataset(
        data=numeric_columns(header, body, columns),
        columns=columns,
        row_labels=tuple(row[0] for row in body),
        description="Epilepsy trial: seizure counts per patient and period",
    )


def load_chickweight() -> Dataset:
    """Weights (g) of 50 chicks on 4 diets over 21 days; some series end early (R's ``ChickWeight``).

    Columns: ``weight``, ``Time`` (days since birth), ``Chick`` (the
    sequence) and ``Diet`` (1-4).
    """
    from ._grouped import numeric_columns, read_table

    header, body = read_table("ChickWeight.csv")
    columns = ("weight", "Time", "Chick", "Diet")
    return Dataset(
        data=numeric_columns(header, body, columns),
        columns=columns,
        row_labels=tuple(row[0] for row in body),
        description="Chick weights over time, one series per chick",
    )


def load_nile() -> Dataset:
    """Annual flow of the Nile at Aswan, 1871-1970, in 1e8 m^3 (R's ``datasets::Nile``).

    Columns: ``time`` (year) and ``value`` (flow).
    """
    from ._grouped import numeric_columns, read_table

    header, body = read_table("Nile.csv")
    columns = ("time", "value")
    return Dataset(
        data=numeric_columns(header, body, columns),
        columns=columns,
        row_labels=tuple(row[0] for row in body),
        description="Annual Nile flow at Aswan, 1871-1970",
    )


__all__ = ["Dataset", "MaskedDataset", "load_faithful", "load_galaxies", "load_iris", "load_penguins",
           "load_radon", "load_sleepstudy",
           "load_epil", "load_chickweight", "load_nile"]

# Imported last because these loaders build on Dataset above.
from ._catalogue import (  # noqa: E402
    CategoricalDataset,
    load_biochemists,
    load_stackloss,
    load_titanic,
)

__all__ += ["CategoricalDataset", "load_biochemists", "load_stackloss", "load_titanic"]
