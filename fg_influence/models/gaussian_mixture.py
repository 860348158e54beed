"""Variational Bayesian Gaussian mixture with full covariances."""

from __future__ import annotations

import numpy as np

from .._validation import (as_float_array, check_choice, check_int, check_magnitude, check_real, column_names_of,
                           row_labels_of)
from ..families import Dirichlet, NormalWishart
from ..graph import CategoricalFactor, FactorGraph, GaussianMixtureFactor
from ..inference import fit_cavi
from ..inference.cavi import INIT_METHODS
from ..inference.threads import numba_threads
from ..inference.posterior import Posterior
from ..influence import InfluenceResult
from .mixtures import warn_empty_components


#: Range of the scalar priors. A value below 1e-10 is lost in rounding when added to
#: the data counts (beta0 + r - r can be exactly 0), and one above 1e10 overflows in
#: beta0 m m^T or swamps the data.
PRIOR_RANGE = (1e-10, 1e10)


def _check_prior_range(value: float, name: str, low: float = 0.0) -> None:
    smallest, largest = PRIOR_RANGE
    if not (value - low >= smallest and value <= largest):
        raise ValueError(
            f"{name} must be between {low + smallest:g} and {largest:g}, got {value:g}; values "
            f"outside this range are lost in rounding against the data counts or overflow"
        )


def _check_no_constant_column(X: np.ndarray) -> None:
    """Raise ValueError if a column of X (N, D) has zero variance.

    A constant column gives its components a variance that shrinks towards 0
    during CAVI, which later breaks the linear-response correction.
    """
    constant = np.flatnonzero(np.ptp(X, axis=0) == 0)
    if constant.size:
        raise ValueError(
            f"X column {int(constant[0])} is constant (every value is {float(X[0, constant[0]]):g}), so "
            f"it has zero variance and no mixture can be fitted to it; drop that column "
            f"(constant columns: {constant.tolist()})"
        )


#: A column whose standard deviation is below this fraction of its absolute mean is
#: named when a fit fails. The posterior covariance is a difference of sums of
#: squares whose relative size is about (std / mean)^2, so at 1e-6 only about 4 of
#: float64's 16 significant digits are left (fits of 300 rows failed from 2e-9 down).
NEARLY_CONSTANT_RATIO = 1e-6


def _nearly_constant_column_hint(X: np.ndarray, names: list[str] | None) -> str:
    """Return advice naming the column of X (N, D) with the smallest std / |mean| below NEARLY_CONSTANT_RATIO, or ''."""
    spread = X.std(axis=0)
    centre = np.abs(X.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(centre > 0, spread / centre, np.inf)
    column = int(np.argmin(ratio))
    if not ratio[column] < NEARLY_CONSTANT_RATIO:
        return ""
    label = f"X column {column}" + ("" if names is None else f" ({names[column]!r})")
    others = np.flatnonzero(ratio < NEARLY_CONSTANT_RATIO).tolist()
    listing = f" (nearly constant columns: {others})" if len(others) > 1 else ""
    return (
        f"{label} is nearly constant far from 0: its standard deviation {spread[column]:.3g} is "
        f"{ratio[column]:.2g} times its mean {X[:, column].mean():.6g}, so the sums of squares that "
        f"give its variance cancel in floating point{listing}. Centre and scale that column, for example "
        f"(X - X.mean(axis=0)) / X.std(axis=0), or drop it if its variation is only noise"
    )


class GaussianMixture:
    """Gaussian mixture fitted by CAVI, with leave-one-out influence of every row.

    The model is

        pi ~ Dirichlet(weight_concentration_prior * ones(K))
        (mu_k, Lambda_k) ~ NormalWishart(mean_prior, mean_precision_prior,
                                         inv(covariance_prior), degrees_of_freedom_prior)
        z_i ~ Categorical(pi),  x_i | z_i = k ~ N(mu_k, Lambda_k^-1)

    declared with :class:`fg_influence.graph.FactorGraph` and fitted by the
    generic CAVI loop. Prior names and defaults follow scikit-learn's
    ``BayesianGaussianMixture`` with a Dirichlet-distribution weight prior.

    Parameters
    ----------
    n_components : int, default 1
        Number of components K.
    weight_concentration_prior : float, optional
        Dirichlet concentration alpha0 of each weight; default 1 / K.
    mean_precision_prior : float, default 1.0
        beta0, the precision of the component means relative to Lambda_k.
    mean_prior : array_like, shape (D,), optional
        m0; default the data mean.
    degrees_of_freedom_prior : float, optional
        nu0 > D - 1; default D.
    covariance_prior : array_like, shape (D, D), optional
        Inverse of the Wishart scale, W0^-1; default the data covariance
        (the identity for one row).
    tol : float, default 1e-9
        Relative ELBO change at which CAVI stops.
    max_iter : int, default 1000
    n_init : int, default 1
        Number of starting points; the fit with the highest ELBO is kept.
    init_params : {"kmeans", "random"}, default "kmeans"
    random_state : None, int or numpy.random.Generator
        Seed for the starting points.
    n_jobs : int, optional
        Threads for the Numba kernels in ``fit`` and ``influence``; None uses
        all NUMBA_NUM_THREADS. Results do not depend on it.

    Attributes
    ----------
    posterior_ : Posterior
    weights_ : ndarray, shape (K,)
        Posterior mean of the mixing weights.
    means_ : ndarray, shape (K, D)
    precisions_ : ndarray, shape (K, D, D)
        Posterior mean E[Lambda_k] = nu_k W_k.
    covariances_ : ndarray, shape (K, D, D)
        Inverse of ``precisions_``.
    weight_concentration_, mean_precision_, degrees_of_freedom_ : ndarray, shape (K,)
    scale_ : ndarray, shape (K, D, D)
        Wishart scale W_k.
    lower_bound_ : float
    n_iter_ : int
    converged_ : bool
    row_labels_ : list or None
        Index of X when it was a pandas DataFrame or Series; labels the rows
        of :meth:`influence` results.
    feature_names_in_ : list of str or None
        Column names of X when it was a pandas DataFrame.
    """

    def __init__(self, n_components=1, *, weight_concentration_prior=None, mean_precision_prior=1.0,
                 mean_prior=None, degrees_of_freedom_prior=None, covariance_prior=None, tol=1e-9,
                 max_iter=1000, n_init=1, init_params="kmeans", random_state=None, n_jobs=None):
        self.n_components = n_components
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.n_jobs = n_jobs

    # Building the model

    def _check_data(self, X, name="X") -> np.ndarray:
        X = as_float_array(X, name, ndim=(1, 2))
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[0] < 2:
            raise ValueError(
                f"{name} must have at least 2 rows to fit a mixture, got {X.shape[0]}"
            )
        if X.shape[1] < 1:
            raise ValueError(f"{name} must have at least one column, got shape {X.shape}")
        check_magnitude(X, name)
        return X

    def priors(self, X) -> dict:
        """Prior parameters resolved against data X (defaults filled in)."""
        X = self._check_data(X)
        n, d = X.shape
        k = check_int(self.n_components, "n_components", minimum=1)
        if k > n:
            raise ValueError(
                f"n_components must be at most the number of rows ({n}), got {k}; use fewer components"
            )
        alpha0 = 1.0 / k if self.weight_concentration_prior is None else check_real(
            self.weight_concentration_prior, "weight_concentration_prior", low=0.0)
        beta0 = check_real(self.mean_precision_prior, "mean_precision_prior", low=0.0)
        _check_prior_range(alpha0, "weight_concentration_prior")
        _check_prior_range(beta0, "mean_precision_prior")
        if self.mean_prior is None:
            m0 = X.mean(axis=0)
        else:
            m0 = as_float_array(self.mean_prior, "mean_prior", ndim=1, shape=(d,))
            check_magnitude(m0, "mean_prior")
        nu0 = float(d) if self.degrees_of_freedom_prior is None else check_real(
            self.degrees_of_freedom_prior, "degrees_of_freedom_prior")
        if nu0 <= d - 1:
            raise ValueError(
                f"degrees_of_freedom_prior must be greater than D - 1 = {d - 1} for a proper "
                f"Wishart prior, got {nu0}; use at least {d}"
            )
        _check_prior_range(nu0, "degrees_of_freedom_prior", low=d - 1)
        if self.covariance_prior is None:
            cov0 = np.atleast_2d(np.cov(X, rowvar=False)) if n > 1 else np.eye(d)
            if not np.all(np.linalg.eigvalsh(cov0) > 0):
                cov0 = cov0 + np.eye(d) * max(1e-6, 1e-6 * np.trace(cov0) / d)
        else:
            cov0 = as_float_array(self.covariance_prior, "covariance_prior", ndim=2, shape=(d, d))
            check_magnitude(cov0, "covariance_prior")
            if not np.allclose(cov0, cov0.T) or np.any(np.linalg.eigvalsh(0.5 * (cov0 + cov0.T)) <= 0):
                raise ValueError(
                    "covariance_prior must be a symmetric positive definite (D, D) matrix; "
                    "pass, for example, a scaled identity"
                )
        return {
            "weight_concentration_prior": alpha0,
            "mean_precision_prior": beta0,
            "mean_prior": m0,
            "degrees_of_freedom_prior": nu0,
            "covariance_prior": cov0,
        }

    def build_graph(self, X) -> FactorGraph:
        """Build the model for data X as a factor graph."""
        X = self._check_data(X)
        priors = self.priors(X)
        n, d = X.shape
        k = self.n_components
        scale0 = np.linalg.inv(priors["covariance_prior"])
        graph = FactorGraph()
        graph.add_plate("data", n)
        graph.add_plate("components", k)
        graph.add_global("weights", Dirichlet(np.full(k, priors["weight_concentration_prior"])))
        graph.add_global(
            "components",
            NormalWishart(
                np.tile(priors["mean_prior"], (k, 1)),
                np.full(k, priors["mean_precision_prior"]),
                np.tile(0.5 * (scale0 + scale0.T), (k, 1, 1)),
                np.full(k, priors["degrees_of_freedom_prior"]),
            ),
            plates=("components",),
        )
        graph.add_local("assignment", plate="data", categories="components")
        graph.add_observed("x", X, plate="data")
        graph.add_factor(CategoricalFactor("assignment_prior", "assignment", "weights"))
        graph.add_factor(GaussianMixtureFactor("likelihood", "x", "assignment", "components"))
        return graph

    # Fitting

    def fit(self, X, y=None, *, init_resp=None) -> "GaussianMixture":
        """Fit the posterior to X of shape (N, D) (or (N,) for one column).

        ``init_resp`` (N, K) starts CAVI from the given responsibilities.
        """
        check_choice(self.init_params, "init_params", INIT_METHODS)
        data = self._check_data(X)
        _check_no_constant_column(data)
        graph = self.build_graph(X)
        init_locals = None if init_resp is None else {"assignment": init_resp}
        try:
            posterior = fit_cavi(
                graph, tol=self.tol, max_iter=self.max_iter, n_init=self.n_init,
                init=self.init_params, init_locals=init_locals, random_state=self.random_state,
                n_jobs=self.n_jobs,
            )
        except ValueError as error:
            if "positive definite" not in str(error):
                raise
            # The count coordinates W^-1 + beta m m^T cancel catastrophically when the
            # data sit far from the origin compared with their spread.
            rest = (
                f"too few rows per component ({graph.plates['data'].size} rows for {self.n_components} "
                f"components), so use fewer components or more rows; or duplicated rows or columns, so "
                f"drop the duplicates"
            )
            hint = _nearly_constant_column_hint(data, column_names_of(X))
            if hint:
                causes = f"{hint}. Other causes: {rest}"
            else:
                causes = (
                    f"Usual causes: the columns are far from 0 relative to their spread or differ in scale "
                    f"by many orders of magnitude, so centre and scale them first, for example "
                    f"(X - X.mean(axis=0)) / X.std(axis=0); {rest}"
                )
            raise ValueError(
                f"fitting X failed because a posterior covariance lost positive definiteness ({error}). {causes}"
            ) from None
        self._set_posterior(posterior)
        warn_empty_components(posterior, "GaussianMixture")
        self.row_labels_ = row_labels_of(X)
        self.feature_names_in_ = column_names_of(X)
        return self

    def _set_posterior(self, posterior: Posterior) -> None:
        self.posterior_ = posterior
        weights = posterior.globals["weights"]
        components = posterior.globals["components"]
        self.weight_concentration_ = weights.concentration.copy()
        self.weights_ = weights.mean()
        self.means_ = components.mean.copy()
        self.mean_precision_ = components.beta.copy()
        self.degrees_of_freedom_ = components.dof.copy()
        self.scale_ = components.scale.copy()
        self.precisions_ = components.wishart.mean()
        self.covariances_ = np.linalg.inv(self.precisions_)
        self.lower_bound_ = posterior.elbo
        self.n_iter_ = posterior.n_iter
        self.converged_ = posterior.converged

    def _check_fitted(self) -> None:
        if not hasattr(self, "posterior_"):
            raise ValueError("this GaussianMixture is not fitted yet; call fit(X) first")

    def _check_new_data(self, X) -> np.ndarray:
        self._check_fitted()
        X = as_float_array(X, "X", ndim=(1, 2))
        if X.ndim == 1:
            X = X[:, None]
        d = self.means_.shape[1]
        if X.shape[1] != d:
            raise ValueError(f"X must have {d} columns like the training data, got shape {X.shape}")
        check_magnitude(X, "X")
        return X

    # Prediction

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities q(z = k) of new points under the fitted posterior, shape (M, K)."""
        from ..kernels.mixture import normalize_log_resp

        X = self._check_new_data(X)
        likelihood = self.posterior_.graph.factors["likelihood"]
        state = Posterior(self.posterior_.graph, self.posterior_.globals, {}, {likelihood.observed: X})
        logits = likelihood.expected_loglik(state) + self.posterior_.globals["weights"].expected_log()
        resp, _ = normalize_log_resp(np.ascontiguousarray(logits))
        return resp

    def predict(self, X) -> np.ndarray:
        """Most probable component of each point, shape (M,)."""
        return np.argmax(self.predict_proba(X), axis=1)

    def score_samples(self, X) -> np.ndarray:
        """Log posterior predictive density of each point (a mixture of Student-t), shape (M,)."""
        X = self._check_new_data(X)
        likelihood = self.posterior_.graph.factors["likelihood"]
        q = likelihood.quadratic_forms(self.posterior_, X)
        return likelihood.log_predictive(self.posterior_, q, np.zeros_like(q), np.zeros(X.shape[0], dtype=bool))

    def score(self, X) -> float:
        """Mean log posterior predictive density of X."""
        return float(np.mean(self.score_samples(X)))

    # Influence

    def influence(self, method: str = "division") -> InfluenceResult:
        """Estimate the leave-one-out influence of every training row.

        ``method="division"`` divides each row's site messages out with the
        other rows' responsibilities held fixed. ``method="linear-response"``
        adds the first-order response of the other rows, which is more
        accurate where components overlap but needs a G x G factorisation.
        """
        self._check_fitted()
        # NOTE: only the summaries computed here (the KL) use n_jobs; properties
        # computed later on first access run on the current thread count.
        with numba_threads(self.n_jobs):
            result = InfluenceResult(self.posterior_, method=method)
        result.row_labels = getattr(self, "row_labels_", None)
        return result

    # Saving

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (a ``.npz`` file, no pickle); see :func:`fg_influence.io.save`."""
        from ..io import save

        save(self, path)

    @classmethod
    def load(cls, path) -> "GaussianMixture":
        """Read a model written by :meth:`save`; see :func:`fg_influence.io.load`."""
        from ..io import load

        model = load(path)
        if not isinstance(model, cls):
            found = type(model).__name__
            article = "an" if found[0] in "AEIOU" else "a"
            raise ValueError(
                f"{path} contains {article} {found}, not a {cls.__name__}; load it with "
                f"fg_influence.io.load, which returns whatever type was saved"
            )
        return model
