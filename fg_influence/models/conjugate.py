"""Beta-Bernoulli and Poisson-Gamma models, which have no latent variables.

Dividing a site's message out of these posteriors gives the exact
posterior without that site, so their influence summaries are exact
leave-one-out values.
"""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_real
from ..families import Beta, Gamma
from ..graph import BernoulliFactor, FactorGraph, PoissonFactor
from ..inference import fit_cavi
from ..influence import InfluenceResult


def check_counts(X, name: str = "X") -> np.ndarray:
    """Validate counts of shape (N,) or (N, D) and return them as (N, D) float64."""
    X = as_float_array(X, name, ndim=(1, 2))
    X = X[:, None] if X.ndim == 1 else X
    if np.any(X < 0):
        raise ValueError(
            f"{name} must hold non-negative counts for a Poisson likelihood, got minimum {X.min():g}"
        )
    fractional = X != np.round(X)
    if np.any(fractional):
        raise ValueError(
            f"{name} must hold integer counts for a Poisson likelihood, got {X[fractional][0]:g}; "
            f"round or recode the values"
        )
    return X


def check_binary(X, name: str = "X") -> np.ndarray:
    """Validate 0/1 data of shape (N,) or (N, D) and return them as (N, D) float64."""
    X = as_float_array(X, name, ndim=(1, 2))
    X = X[:, None] if X.ndim == 1 else X
    bad = (X != 0) & (X != 1)
    if np.any(bad):
        raise ValueError(
            f"{name} must hold only 0 and 1 for a Bernoulli likelihood, got {X[bad][0]:g}; "
            f"recode the column as 0/1"
        )
    return X


class _NoLatentModel:
    """Shared fit and influence of a conjugate model with one global variable."""

    variable = "params"

    def fit(self, X) -> "_NoLatentModel":
        """Fit the exact posterior to data of shape (N,) or (N, D)."""
        self.posterior_ = fit_cavi(self.build_graph(X))
        return self

    def _check_fitted(self):
        if not hasattr(self, "posterior_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    @property
    def posterior(self):
        """The fitted posterior family of the parameters."""
        self._check_fitted()
        return self.posterior_.globals[self.variable]

    def influence(self, method: str = "division") -> InfluenceResult:
        """Exact leave-one-out influence of every row, by division.

        ``method`` is accepted for the same call as the mixtures. Without
        latent variables the CAVI map does not depend on the globals, so the
        linear-response correction is zero and ``"linear-response"`` gives
        the division numbers.
        """
        self._check_fitted()
        return InfluenceResult(self.posterior_, method=method)


class BetaBernoulli(_NoLatentModel):
    """x_id ~ Bernoulli(p_d) with p_d ~ Beta(a, b), independently over columns d.

    Parameters
    ----------
    a, b : float, default 1.0
        Beta prior of every column's probability.
    """

    variable = "probability"

    def __init__(self, a=1.0, b=1.0):
        self.a = a
        self.b = b

    def build_graph(self, X) -> FactorGraph:
        X = check_binary(X)
        a = check_real(self.a, "a", low=0.0)
        b = check_real(self.b, "b", low=0.0)
        graph = FactorGraph()
        graph.add_plate("data", X.shape[0])
        graph.add_global("probability", Beta(np.full(X.shape[1], a), np.full(X.shape[1], b)))
        graph.add_observed("x", X, plate="data")
        graph.add_factor(BernoulliFactor("likelihood", "x", "probability"))
        return graph


class PoissonGamma(_NoLatentModel):
    """x_id ~ Poisson(lambda_d) with lambda_d ~ Gamma(shape, rate), independently over columns d.

    Parameters
    ----------
    shape, rate : float, default 1.0
        Gamma prior of every column's rate.
    """

    variable = "rate"

    def __init__(self, shape=1.0, rate=1.0):
        self.shape = shape
        self.rate = rate

    def build_graph(self, X) -> FactorGraph:
        X = check_counts(X)
        shape = check_real(self.shape, "shape", low=0.0)
        rate = check_real(self.rate, "rate", low=0.0)
        graph = FactorGraph()
        graph.add_plate("data", X.shape[0])
        graph.add_global("rate", Gamma(np.full(X.shape[1], shape), np.full(X.shape[1], rate)))
        graph.add_observed("x", X, plate="data")
        graph.add_factor(PoissonFactor("likelihood", "x", "rate"))
        return graph
