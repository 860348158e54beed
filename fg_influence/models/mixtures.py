"""Mixtures of conjugate likelihoods: diagonal Gaussian, Poisson, Bernoulli and categorical.

Each is declared with :class:`fg_influence.graph.FactorGraph` as

    pi ~ Dirichlet(weight_concentration_prior * ones(K))
    z_i ~ Categorical(pi)
    x_i | z_i = k ~ p(x_i | theta_k),  theta_k ~ conjugate prior

with a :class:`~fg_influence.graph.CategoricalFactor` on z and one
conjugate likelihood factor, and fitted by the generic CAVI loop.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._validation import as_float_array, check_choice, check_int, check_real
from ..exceptions import EmptyComponentWarning
from ..families import Beta, Dirichlet, Gamma, NormalGamma
from ..graph import (
    BernoulliFactor,
    CategoricalDataFactor,
    CategoricalFactor,
    DiagonalGaussianFactor,
    FactorGraph,
    PoissonFactor,
)
from ..inference import fit_cavi
from ..inference.cavi import INIT_METHODS
from ..inference.posterior import Posterior
from ..influence import InfluenceResult
from ..kernels.mixture import normalize_log_resp
from .conjugate import check_binary, check_counts


#: A fitted component whose expected count sum_i q(z_i = k) is below this many
#: rows is reported as empty by ``warn_empty_components``.
EMPTY_COMPONENT_COUNT = 1.0


def warn_empty_components(posterior: Posterior, model_name: str, stacklevel: int = 3) -> None:
    """Warn with EmptyComponentWarning when a component's expected count is below one row.

    An empty component keeps nearly its prior and adds nothing to the fit,
    and warm-started exact refits of such a fit may land at another local
    optimum. ``stacklevel`` 3 points at the caller of ``fit``.
    """
    counts = posterior.locals["assignment"].sum(axis=0)
    empty = np.flatnonzero(counts < EMPTY_COMPONENT_COUNT)
    if not empty.size:
        return
    used = counts.size - empty.size
    listing = ", ".join(f"{int(k)} ({counts[k]:.2g} rows)" for k in empty[:10])
    noun = "component" if empty.size == 1 else "components"
    warnings.warn(
        f"{model_name} fitted {counts.size} components, but {noun} {listing} "
        f"{'has' if empty.size == 1 else 'have'} an expected count below {EMPTY_COMPONENT_COUNT:g} row, so "
        f"the fit uses only {used}. An empty component adds only its prior to the fit, and such a fit "
        f"is often one of several local optima, so warm-started exact refits (compute_exact) may land "
        f"at another one. Fit {used} {'component' if used == 1 else 'components'}, or more n_init to "
        f"look for a fit that uses them all",
        EmptyComponentWarning,
        stacklevel=stacklevel,
    )


class _ConjugateMixture:
    """Shared construction, fitting, prediction and influence of the mixtures in this module."""

    #: Name of the component parameters' global variable (one per column for CategoricalMixture).
    component_variable = "components"

    def _init_common(self, n_components, weight_concentration_prior, tol, max_iter, n_init,
                     init_params, random_state):
        self.n_components = n_components
        self.weight_concentration_prior = weight_concentration_prior
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state

    # Hooks: check_data(X) -> (N, D) array; add_components(graph, X, k) -> factor

    def build_graph(self, X) -> FactorGraph:
        """Build the model for data X as a factor graph."""
        X = self.check_data(X)
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"X must have at least 2 rows to fit a mixture, got {n}")
        k = check_int(self.n_components, "n_components", minimum=1)
        if k > n:
            raise ValueError(f"n_components must be at most the number of rows ({n}), got {k}; use fewer components")
        alpha0 = 1.0 / k if self.weight_concentration_prior is None else check_real(
            self.weight_concentration_prior, "weight_concentration_prior", low=0.0)
        graph = FactorGraph()
        graph.add_plate("data", n)
        graph.add_plate("components", k)
        graph.add_global("weights", Dirichlet(np.full(k, alpha0)))
        graph.add_local("assignment", plate="data", categories="components")
        graph.add_observed("x", X, plate="data")
        graph.add_factor(CategoricalFactor("assignment_prior", "assignment", "weights"))
        graph.add_factor(self.add_components(graph, X, k))
        return graph

    def fit(self, X, y=None, *, init_resp=None):
        """Fit the posterior to X; ``init_resp`` (N, K) starts CAVI from given responsibilities."""
        check_choice(self.init_params, "init_params", INIT_METHODS)
        graph = self.build_graph(X) if y is None else self.build_graph(X, y)
        init_locals = None if init_resp is None else {"assignment": init_resp}
        self.posterior_ = fit_cavi(
            graph, tol=self.tol, max_iter=self.max_iter, n_init=self.n_init, init=self.init_params,
            init_locals=init_locals, random_state=self.random_state,
        )
        weights = self.posterior_.globals["weights"]
        self.weight_concentration_ = weights.concentration.copy()
        self.weights_ = weights.mean()
        self.lower_bound_ = self.posterior_.elbo
        self.n_iter_ = self.posterior_.n_iter
        self.converged_ = self.posterior_.converged
        self._set_components(self.posterior_)
        # A subclass's fit that calls this one (MixtureOfRegressions) adds a frame before the user's.
        overridden = type(self).fit is not _ConjugateMixture.fit
        warn_empty_components(self.posterior_, type(self).__name__, stacklevel=4 if overridden else 3)
        return self

    def _set_components(self, posterior: Posterior) -> None:
        pass

    def _check_fitted(self):
        if not hasattr(self, "posterior_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    def _likelihood(self):
        return self.posterior_.graph.factors["likelihood"]

    def _check_new(self, X) -> np.ndarray:
        self._check_fitted()
        X = self.check_data(X, fitted=True)
        expected = self.posterior_.data["x"].shape[1]
        if X.shape[1] != expected:
            raise ValueError(f"X must have {expected} columns like the training data, got {X.shape[1]}")
        return X

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities q(z = k) of new rows under the fitted posterior, shape (M, K)."""
        X = self._check_new(X)
        logits = self._likelihood().expected_loglik(self.posterior_, X)
        logits = logits + self.posterior_.globals["weights"].expected_log()
        resp, _ = normalize_log_resp(np.ascontiguousarray(logits))
        return resp

    def predict(self, X) -> np.ndarray:
        """Most probable component of each row, shape (M,)."""
        return np.argmax(self.predict_proba(X), axis=1)

    def score_samples(self, X) -> np.ndarray:
        """Log posterior predictive density (or mass) of each row, shape (M,)."""
        X = self._check_new(X)
        zeros = np.zeros((X.shape[0], self.n_components))
        improper = np.zeros(X.shape[0], dtype=bool)
        return self._likelihood().log_predictive(self.posterior_, X, zeros, improper)

    def influence(self, method: str = "division") -> InfluenceResult:
        """Estimate the leave-one-out influence of every training row.

        ``method="division"`` divides each row's site messages out with the
        other rows' responsibilities held fixed. ``method="linear-response"``
        adds the first-order response of the other rows' responsibilities
        (see :mod:`fg_influence.influence.linear_response`), which tracks
        exact refits more closely where components overlap.
        """
        self._check_fitted()
        return InfluenceResult(self.posterior_, method=method)


_COMMON_DOC = """
    n_components : int, default 1
    weight_concentration_prior : float, optional
        Dirichlet concentration of each weight; default 1 / K.
    tol : float, default 1e-9
        Relative ELBO change at which CAVI stops.
    max_iter : int, default 1000
    n_init : int, default 1
        Number of starting points; the fit with the highest ELBO is kept.
    init_params : {"kmeans", "random"}, default "kmeans"
    random_state : None, int or numpy.random.Generator
"""


def _with_common_parameters(cls):
    """Fill the shared parameter descriptions into a mixture class's docstring."""
    cls.__doc__ = cls.__doc__.replace("{common_parameters}", _COMMON_DOC.strip())
    return cls


@_with_common_parameters
class DiagonalGaussianMixture(_ConjugateMixture):
    """Gaussian mixture with diagonal covariances: a Normal-Gamma per component and column.

    (mu_kd, tau_kd) ~ NormalGamma(mean_prior_d, mean_precision_prior,
    degrees_of_freedom_prior / 2, covariance_prior_d / 2) and
    x_id | z_i = k ~ N(mu_kd, 1 / tau_kd). Prior names and defaults follow
    scikit-learn's ``BayesianGaussianMixture(covariance_type="diag")``: the
    Gamma shape nu0 / 2 and rate covariance_prior / 2 are the one-dimensional
    Wishart with nu0 degrees of freedom and scale 1 / covariance_prior.

    NOTE: scikit-learn's diagonal model takes E[ln |Lambda_k|] from the
    full-Wishart formula (digamma terms at (nu_k - d) / 2 for d = 0..D-1),
    while independent Gammas give D digamma terms at nu_k / 2. The two agree
    for one column; with D > 1 their responsibilities differ slightly.

    Parameters
    ----------
    {common_parameters}
    mean_precision_prior : float, default 1.0
    mean_prior : array_like, shape (D,), optional
        Default the column means.
    degrees_of_freedom_prior : float, optional
        Default D, as in scikit-learn.
    covariance_prior : array_like, shape (D,), optional
        Default the column variances.

    Attributes
    ----------
    weights_ : ndarray, shape (K,)
    means_ : ndarray, shape (K, D)
    mean_precision_ : ndarray, shape (K,)
    degrees_of_freedom_ : ndarray, shape (K,)
        2 * Gamma shape.
    covariances_ : ndarray, shape (K, D)
        rate / shape = 1 / E[tau_kd], scikit-learn's ``covariances_``.
    """

    def __init__(self, n_components=1, *, weight_concentration_prior=None, mean_precision_prior=1.0,
                 mean_prior=None, degrees_of_freedom_prior=None, covariance_prior=None, tol=1e-9,
                 max_iter=1000, n_init=1, init_params="kmeans", random_state=None):
        self._init_common(n_components, weight_concentration_prior, tol, max_iter, n_init,
                          init_params, random_state)
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior

    def check_data(self, X, fitted=False):
        X = as_float_array(X, "X", ndim=(1, 2))
        return X[:, None] if X.ndim == 1 else X

    def add_components(self, graph, X, k):
        n, d = X.shape
        beta0 = check_real(self.mean_precision_prior, "mean_precision_prior", low=0.0)
        m0 = X.mean(axis=0) if self.mean_prior is None else as_float_array(
            self.mean_prior, "mean_prior", ndim=1, shape=(d,))
        nu0 = float(d) if self.degrees_of_freedom_prior is None else check_real(
            self.degrees_of_freedom_prior, "degrees_of_freedom_prior", low=0.0)
        if self.covariance_prior is None:
            cov0 = X.var(axis=0, ddof=1)
            if np.any(cov0 <= 0):
                raise ValueError(
                    "a column of X is constant, so the default covariance_prior (the column variance) "
                    "is 0; drop the column or pass covariance_prior"
                )
        else:
            cov0 = as_float_array(self.covariance_prior, "covariance_prior", ndim=1, shape=(d,))
            if np.any(cov0 <= 0):
                raise ValueError(f"covariance_prior must be positive, got {cov0}")
        prior = NormalGamma(
            np.tile(m0[:, None], (k, 1, 1)), np.full((k, d, 1, 1), beta0),
            np.full((k, d), 0.5 * nu0), np.tile(0.5 * cov0, (k, 1)),
        )
        graph.add_global("components", prior, plates=("components",))
        return DiagonalGaussianFactor("likelihood", "x", "components", assignment="assignment")

    def _set_components(self, posterior):
        components = posterior.globals["components"]
        self.means_ = components.mean[..., 0].copy()
        self.mean_precision_ = components.precision[:, 0, 0, 0].copy()
        self.degrees_of_freedom_ = 2.0 * components.shape[:, 0]
        self.covariances_ = components.rate / components.shape


@_with_common_parameters
class PoissonMixture(_ConjugateMixture):
    """Mixture of independent Poissons: x_id | z_i = k ~ Poisson(lambda_kd), lambda_kd ~ Gamma.

    Parameters
    ----------
    {common_parameters}
    rate_shape_prior : float, default 1.0
        Gamma shape of every rate.
    rate_rate_prior : float, optional
        Gamma rate of every rate; default 1 / (column mean + 1), which centres
        the prior near the data.

    Attributes
    ----------
    weights_ : ndarray, shape (K,)
    rates_ : ndarray, shape (K, D)
        Posterior mean rates.
    """

    component_variable = "rates"

    def __init__(self, n_components=1, *, weight_concentration_prior=None, rate_shape_prior=1.0,
                 rate_rate_prior=None, tol=1e-9, max_iter=1000, n_init=1, init_params="kmeans",
                 random_state=None):
        self._init_common(n_components, weight_concentration_prior, tol, max_iter, n_init,
                          init_params, random_state)
        self.rate_shape_prior = rate_shape_prior
        self.rate_rate_prior = rate_rate_prior

    def check_data(self, X, fitted=False):
        return check_counts(X)

    def add_components(self, graph, X, k):
        d = X.shape[1]
        shape = check_real(self.rate_shape_prior, "rate_shape_prior", low=0.0)
        if self.rate_rate_prior is None:
            rate = 1.0 / (X.mean(axis=0) + 1.0)
        else:
            rate = np.full(d, check_real(self.rate_rate_prior, "rate_rate_prior", low=0.0))
        graph.add_global("rates", Gamma(np.full((k, d), shape), np.tile(rate, (k, 1))), plates=("components",))
        return PoissonFactor("likelihood", "x", "rates", assignment="assignment")

    def _set_components(self, posterior):
        self.rates_ = posterior.globals["rates"].mean()


@_with_common_parameters
class BernoulliMixture(_ConjugateMixture):
    """Mixture of independent Bernoullis (latent class analysis of binary items), p_kd ~ Beta(a, b).

    Parameters
    ----------
    {common_parameters}
    a_prior, b_prior : float, default 1.0
        Beta prior of every probability.

    Attributes
    ----------
    weights_ : ndarray, shape (K,)
    probabilities_ : ndarray, shape (K, D)
        Posterior mean probabilities of a 1.
    """

    component_variable = "probabilities"

    def __init__(self, n_components=1, *, weight_concentration_prior=None, a_prior=1.0, b_prior=1.0,
                 tol=1e-9, max_iter=1000, n_init=1, init_params="kmeans", random_state=None):
        self._init_common(n_components, weight_concentration_prior, tol, max_iter, n_init,
                          init_params, random_state)
        self.a_prior = a_prior
        self.b_prior = b_prior

    def check_data(self, X, fitted=False):
        return check_binary(X)

    def add_components(self, graph, X, k):
        d = X.shape[1]
        a = check_real(self.a_prior, "a_prior", low=0.0)
        b = check_real(self.b_prior, "b_prior", low=0.0)
        graph.add_global("probabilities", Beta(np.full((k, d), a), np.full((k, d), b)), plates=("components",))
        return BernoulliFactor("likelihood", "x", "probabilities", assignment="assignment")

    def _set_components(self, posterior):
        self.probabilities_ = posterior.globals["probabilities"].mean()


@_with_common_parameters
class CategoricalMixture(_ConjugateMixture):
    """Latent class model: x_id | z_i = k ~ Categorical(pi_kd), pi_kd ~ Dirichlet(concentration_prior).

    X contains integer category codes 0..C_d - 1 per column; ``n_categories``
    fixes C_d (default: the largest code of each column plus one).

    Parameters
    ----------
    {common_parameters}
    concentration_prior : float, default 1.0
    n_categories : sequence of int, optional

    Attributes
    ----------
    weights_ : ndarray, shape (K,)
    probabilities_ : list of ndarray, shape (K, C_d)
        Posterior mean category probabilities of each column.
    """

    def __init__(self, n_components=1, *, weight_concentration_prior=None, concentration_prior=1.0,
                 n_categories=None, tol=1e-9, max_iter=1000, n_init=1, init_params="kmeans",
                 random_state=None):
        self._init_common(n_components, weight_concentration_prior, tol, max_iter, n_init,
                          init_params, random_state)
        self.concentration_prior = concentration_prior
        self.n_categories = n_categories

    def check_data(self, X, fitted=False):
        X = as_float_array(X, "X", ndim=(1, 2))
        X = X[:, None] if X.ndim == 1 else X
        bad = (X < 0) | (X != np.round(X))
        if np.any(bad):
            raise ValueError(
                f"X must hold non-negative integer category codes, got {X[bad][0]:g}; encode each "
                f"column's categories as 0, 1, ..., C - 1"
            )
        if fitted:
            limits = np.array(self.categories_)
            too_large = X >= limits[None, : X.shape[1]] if X.shape[1] <= limits.size else np.zeros_like(X, bool)
            if np.any(too_large):
                column = int(np.argwhere(too_large)[0][1])
                raise ValueError(
                    f"X has category code {int(X[too_large][0])} in column {column}, unseen in "
                    f"training (the model has {limits[column]} categories there); recode it or refit"
                )
        return X

    def resolved_categories(self, X) -> list[int]:
        if self.n_categories is None:
            return [int(X[:, j].max()) + 1 for j in range(X.shape[1])]
        counts = [check_int(c, "n_categories entries", minimum=1) for c in self.n_categories]
        if len(counts) != X.shape[1]:
            raise ValueError(f"n_categories must have one entry per column ({X.shape[1]}), got {len(counts)}")
        for j, count in enumerate(counts):
            if X[:, j].max() >= count:
                raise ValueError(
                    f"column {j} of X has code {int(X[:, j].max())}, but n_categories gives it only "
                    f"{count} categories (codes 0..{count - 1}); raise n_categories or recode"
                )
        return counts

    def add_components(self, graph, X, k):
        alpha = check_real(self.concentration_prior, "concentration_prior", low=0.0)
        self.categories_ = self.resolved_categories(X)
        names = []
        for j, count in enumerate(self.categories_):
            name = f"probabilities_{j}"
            graph.add_global(name, Dirichlet(np.full((k, count), alpha)), plates=("components",))
            names.append(name)
        return CategoricalDataFactor("likelihood", "x", names, assignment="assignment")

    def _set_components(self, posterior):
        self.probabilities_ = [posterior.globals[f"probabilities_{j}"].mean() for j in range(len(self.categories_))]
