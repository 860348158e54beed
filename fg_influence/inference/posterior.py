"""The fitted variational posterior: global factors, local factors and data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..families import ExponentialFamily


@dataclass
class Posterior:
    """State of a mean-field posterior q(globals) prod_i q(locals_i) on a factor graph.

    Attributes
    ----------
    graph : FactorGraph
        The model the posterior belongs to.
    globals : dict of str to ExponentialFamily
        q of each global variable, of the prior's family and batch shape.
    locals : dict of str to ndarray, shape (n_sites, K)
        Responsibilities q(z_i = k) of each local categorical variable.
    data : dict of str to ndarray
        Observed arrays, one row per site.
    elbo : float
        Evidence lower bound at this state.
    elbo_history : list of float
        ELBO after each E-step of the run that produced this state.
    n_iter : int
        CAVI iterations run.
    converged : bool
        Whether the relative ELBO change fell below the tolerance.
    """

    graph: object
    globals: dict[str, ExponentialFamily]
    locals: dict[str, np.ndarray]
    data: dict[str, np.ndarray]
    elbo: float = float("nan")
    elbo_history: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False

    @property
    def n_sites(self) -> int:
        return self.graph.n_sites
