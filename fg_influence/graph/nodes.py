"""Plates and variable nodes of a factor graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..families import ExponentialFamily


@dataclass(frozen=True)
class Plate:
    """A named axis of repetition, such as ``data`` of size N."""

    name: str
    size: int


@dataclass(eq=False)
class GlobalVariable:
    """A variable outside the site plate, with a conjugate prior.

    The prior's batch shape runs over ``plates`` (for example one
    Normal-Wishart per component), and the fitted posterior is of the same
    family and batch shape.
    """

    name: str
    prior: ExponentialFamily
    plates: tuple[str, ...] = ()
    role: str = field(default="global", init=False)


@dataclass(eq=False)
class LocalVariable:
    """A categorical variable with one value per site, such as an assignment z_i.

    ``plate`` is the site plate and ``categories`` the plate that indexes
    its values (for a mixture, the components).
    """

    name: str
    plate: str
    categories: str
    role: str = field(default="local", init=False)


@dataclass(eq=False)
class ObservedVariable:
    """Observed data with one row per site, shape (N, D)."""

    name: str
    data: np.ndarray
    plate: str
    role: str = field(default="observed", init=False)
