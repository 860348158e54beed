"""Mixture of linear regressions with constant gates."""

from __future__ import annotations

import numpy as np

from .._validation import check_real
from ..families import NormalGamma
from ..graph import LinearRegressionFactor
from .linear_regression import check_design
from .mixtures import _ConjugateMixture, _with_common_parameters


@_with_common_parameters
class MixtureOfRegressions(_ConjugateMixture):
    """y_i | z_i = k ~ N(x_i^T w_k, 1 / tau_k) with z_i ~ Categorical(pi) and (w_k, tau_k) ~ NormalGamma.

    A mixture of experts whose gates do not depend on x. ``fit(X, y)``
    stores the design (with an intercept column first when
    ``fit_intercept``) and the response side by side in the observed
    variable ``x``. CAVI starts from k-means on (design, response).

    Parameters
    ----------
    {common_parameters}
    fit_intercept : bool, default True
    coef_precision_prior : float, default 1e-2
        Prior precision of each coefficient relative to tau_k.
    noise_shape_prior, noise_rate_prior : float, default 1.0
        Gamma prior of each component's noise precision, in units of the response.

    Attributes
    ----------
    weights_ : ndarray, shape (K,)
    coefs_ : ndarray, shape (K, P')
        Posterior mean coefficients of each component (intercept first).
    noise_precisions_ : ndarray, shape (K,)
    """

    component_variable = "coefficients"

    def __init__(self, n_components=1, *, weight_concentration_prior=None, fit_intercept=True,
                 coef_precision_prior=1e-2, noise_shape_prior=1.0, noise_rate_prior=1.0, tol=1e-9,
                 max_iter=1000, n_init=1, init_params="kmeans", random_state=None):
        self._init_common(n_components, weight_concentration_prior, tol, max_iter, n_init,
                          init_params, random_state)
        self.fit_intercept = fit_intercept
        self.coef_precision_prior = coef_precision_prior
        self.noise_shape_prior = noise_shape_prior
        self.noise_rate_prior = noise_rate_prior

    def check_data(self, X, fitted=False):
        # fit() has already joined the design and the response.
        return X

    def build_graph(self, X, y=None):
        if y is None:
            raise TypeError("MixtureOfRegressions.build_graph needs X and y")
        design, y = check_design(X, y, fit_intercept=self.fit_intercept)
        return super().build_graph(np.column_stack([design, y]))

    def fit(self, X, y=None, *, init_resp=None):
        """Fit to X of shape (N, P) (or (N,)) and y of shape (N,)."""
        if y is None:
            raise TypeError("MixtureOfRegressions.fit needs X and y")
        return super().fit(X, y, init_resp=init_resp)

    def add_components(self, graph, X, k):
        p = X.shape[1] - 1
        precision = check_real(self.coef_precision_prior, "coef_precision_prior", low=0.0)
        shape = check_real(self.noise_shape_prior, "noise_shape_prior", low=0.0)
        rate = check_real(self.noise_rate_prior, "noise_rate_prior", low=0.0)
        prior = NormalGamma(np.zeros((k, p)), np.tile(precision * np.eye(p), (k, 1, 1)),
                            np.full(k, shape), np.full(k, rate))
        graph.add_global("coefficients", prior, plates=("components",))
        return LinearRegressionFactor("likelihood", "x", "coefficients", assignment="assignment")

    def _set_components(self, posterior):
        components = posterior.globals["coefficients"]
        self.coefs_ = components.mean.copy()
        self.noise_precisions_ = components.expected_precision()

    def _joined(self, X, y):
        design, y = check_design(X, y, fit_intercept=self.fit_intercept, min_rows=1)
        return np.column_stack([design, y])

    def predict_proba(self, X, y=None):
        """Responsibilities of new (X, y) rows, shape (M, K)."""
        return super().predict_proba(self._joined(X, y))

    def predict(self, X, y=None):
        """Most probable component of each new (X, y) row, shape (M,)."""
        return np.argmax(self.predict_proba(X, y), axis=1)

    def score_samples(self, X, y=None):
        """Log posterior predictive density of y given X for each new row, shape (M,)."""
        return super().score_samples(self._joined(X, y))
