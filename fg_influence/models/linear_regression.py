"""Bayesian linear regression with unknown noise precision."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_real
from ..families import NormalGamma
from ..graph import FactorGraph, LinearRegressionFactor
from ..inference import fit_cavi
from ..influence import InfluenceResult


def check_design(X, y, *, fit_intercept: bool, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate a regression's X (N, P) and y (N,) and return the design (with an intercept column first)."""
    X = as_float_array(X, "X", ndim=(1, 2))
    if X.ndim == 1:
        X = X[:, None]
    y = as_float_array(y, "y", ndim=(1, 2))
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ValueError(f"y must be one response column, got shape {y.shape}")
        y = y[:, 0]
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
    if X.shape[0] < min_rows:
        raise ValueError(f"X must have at least {min_rows} rows, got {X.shape[0]}")
    design = np.column_stack([np.ones(X.shape[0]), X]) if fit_intercept else X
    rank = np.linalg.matrix_rank(design)
    if rank < design.shape[1]:
        raise ValueError(
            f"the design matrix is singular: rank {rank} with {design.shape[1]} columns"
            f"{' (including the intercept)' if fit_intercept else ''}, so some columns are linear "
            f"combinations of others (or constant, with an intercept); drop the redundant columns"
        )
    return design, y


class BayesianLinearRegression:
    """Linear regression y = X w + noise with a conjugate Normal-Gamma prior, and row influence.

    The model is

        tau ~ Gamma(noise_shape_prior, noise_rate_prior)
        w | tau ~ N(0, (tau * coef_precision_prior * I)^-1)
        y_i | w, tau ~ N(x_i^T w, 1 / tau)

    declared with :class:`fg_influence.graph.FactorGraph` (one
    :class:`~fg_influence.graph.LinearRegressionFactor`) and fitted by the
    generic CAVI loop, which here reaches the exact posterior in one
    update because the model has no latent variables. For the same reason
    each row's divided posterior is the exact posterior without that row.
    With ``fit_intercept`` the intercept is the first coefficient of the
    posterior and of every shift.

    Parameters
    ----------
    fit_intercept : bool, default True
    coef_precision_prior : float, default 1e-6
        Prior precision of each coefficient relative to tau; small values
        make the posterior mean approach ordinary least squares.
    noise_shape_prior, noise_rate_prior : float, default 1e-3
        Gamma prior of the noise precision tau.

    Attributes
    ----------
    posterior_ : Posterior
    coef_ : ndarray, shape (P,)
        Posterior mean of the slopes.
    intercept_ : float
        Posterior mean of the intercept (0.0 without ``fit_intercept``).
    coef_covariance_ : ndarray, shape (P', P')
        Marginal posterior covariance of all coefficients (intercept first).
    noise_precision_ : float
        E[tau].
    """

    def __init__(self, *, fit_intercept=True, coef_precision_prior=1e-6, noise_shape_prior=1e-3,
                 noise_rate_prior=1e-3):
        self.fit_intercept = fit_intercept
        self.coef_precision_prior = coef_precision_prior
        self.noise_shape_prior = noise_shape_prior
        self.noise_rate_prior = noise_rate_prior

    def prior(self, n_coefficients: int) -> NormalGamma:
        precision = check_real(self.coef_precision_prior, "coef_precision_prior", low=0.0)
        shape = check_real(self.noise_shape_prior, "noise_shape_prior", low=0.0)
        rate = check_real(self.noise_rate_prior, "noise_rate_prior", low=0.0)
        return NormalGamma(np.zeros(n_coefficients), precision * np.eye(n_coefficients), shape, rate)

    def build_graph(self, X, y) -> FactorGraph:
        """The model for X (N, P) and y (N,) as a factor graph."""
        design, y = check_design(X, y, fit_intercept=self.fit_intercept)
        graph = FactorGraph()
        graph.add_plate("data", design.shape[0])
        graph.add_global("coefficients", self.prior(design.shape[1]))
        graph.add_observed("xy", np.column_stack([design, y]), plate="data")
        graph.add_factor(LinearRegressionFactor("likelihood", "xy", "coefficients"))
        return graph

    def fit(self, X, y) -> "BayesianLinearRegression":
        """Fit the posterior to X of shape (N, P) (or (N,)) and y of shape (N,)."""
        self.posterior_ = fit_cavi(self.build_graph(X, y))
        posterior = self.posterior_.globals["coefficients"]
        self.n_features_in_ = posterior.dim - int(bool(self.fit_intercept))
        self.intercept_ = float(posterior.mean[0]) if self.fit_intercept else 0.0
        self.coef_ = posterior.mean[int(bool(self.fit_intercept)):].copy()
        self.noise_precision_ = float(posterior.expected_precision())
        if posterior.shape > 1.0:
            self.coef_covariance_ = posterior.coefficient_covariance()
        return self

    def _check_fitted(self):
        if not hasattr(self, "posterior_"):
            raise ValueError("this BayesianLinearRegression is not fitted yet; call fit(X, y) first")

    def predict(self, X) -> np.ndarray:
        """Posterior mean of the response at the rows of X, shape (M,)."""
        self._check_fitted()
        X = as_float_array(X, "X", ndim=(1, 2))
        X = X[:, None] if X.ndim == 1 else X
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns like the training data, got {X.shape[1]}")
        return X @ self.coef_ + self.intercept_

    def influence(self, method: str = "division") -> InfluenceResult:
        """Leave-one-out influence of every row; shifts ``coefficients.coef`` (N, P') and
        ``coefficients.noise_precision`` (N,).

        Without latent variables division is the exact leave-one-out
        posterior, so ``method="linear-response"`` gives the same numbers.
        """
        self._check_fitted()
        return InfluenceResult(self.posterior_, method=method)

    def cooks_distance(self, result: InfluenceResult | None = None) -> np.ndarray:
        """Cook's distance of every row from the coefficient shifts, shape (N,).

        D_i = shift_i^T X^T X shift_i / (P' s^2), with s^2 = RSS / (N - P')
        at the posterior mean. With a vague prior the shift is the classical
        dfbeta (with the opposite sign), so this is Cook (1977)'s distance.
        """
        self._check_fitted()
        result = self.influence() if result is None else result
        shift = result.shift("coefficients.coef")
        data = self.posterior_.data["xy"]
        design, y = data[:, :-1], data[:, -1]
        n, p = design.shape
        residuals = y - design @ self.posterior_.globals["coefficients"].mean
        if n <= p:
            raise ValueError(f"Cook's distance needs more rows than coefficients, got {n} rows and {p} coefficients")
        variance = residuals @ residuals / (n - p)
        gram = design.T @ design
        return np.einsum("ni,ij,nj->n", shift, gram, shift) / (p * variance)
