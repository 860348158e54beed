"""All-site leave-one-out summaries from closed forms, without building N posteriors.

Each global variable's KL term comes from the factor that sends it
messages: a CategoricalFactor's messages r_i to a Dirichlet, or a
GaussianMixtureFactor's rank-one messages r_ik (x_i, 1, x_i x_i^T, 1) to a
Normal-Wishart. Variables fed by another kind of factor fall back to
explicit division site by site.
"""

from __future__ import annotations

import numpy as np

from ..families import Dirichlet, NormalWishart
from ..families._linalg import multivariate_digamma
from ..graph.factors import CategoricalFactor, GaussianMixtureFactor
from ..inference.posterior import Posterior
from ..kernels import loo as loo_kernels
from ..kernels.mixture import quadratic_forms
from .division import divide, posterior_kl


def mixture_quadratic_forms(posterior: Posterior, factor: GaussianMixtureFactor) -> np.ndarray:
    """q_ik = (x_i - m_k)^T W_k (x_i - m_k) under the fitted posterior, shape (N, K)."""
    components = posterior.globals[factor.components]
    return quadratic_forms(
        posterior.data[factor.observed],
        np.ascontiguousarray(components.mean),
        np.ascontiguousarray(components.wishart._chol),
    )


def _single_factor(posterior: Posterior, name: str):
    factors = posterior.graph.factors_of(name)
    return factors[0] if len(factors) == 1 else None


def all_site_kl(posterior: Posterior) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """KL(q || q without site i) for each global variable and site.

    Returns
    -------
    kl_by_variable : dict of str to ndarray, shape (N,)
    improper : ndarray of bool, shape (N,)
        True where some divided factor is improper; those sites' KL values are 0.
    """
    n_sites = posterior.n_sites
    improper = np.zeros(n_sites, dtype=bool)
    kl_by_variable = {}
    for variable in posterior.graph.variables_of_role("global"):
        name = variable.name
        fitted = posterior.globals[name]
        factor = _single_factor(posterior, name)
        if isinstance(factor, CategoricalFactor) and isinstance(fitted, Dirichlet):
            resp = np.ascontiguousarray(posterior.locals[factor.assignment])
            kl_by_variable[name] = loo_kernels.dirichlet_downdate_kl(
                fitted.concentration, resp, fitted.expected_log(), improper
            )
        elif isinstance(factor, GaussianMixtureFactor) and isinstance(fitted, NormalWishart):
            resp = np.ascontiguousarray(posterior.locals[factor.assignment])
            q = mixture_quadratic_forms(posterior, factor)
            kl_by_variable[name] = loo_kernels.normal_wishart_downdate_kl(
                q, resp, fitted.beta, fitted.dof,
                multivariate_digamma(0.5 * fitted.dof, fitted.dim), float(fitted.dim), improper,
            )
        else:
            kl_by_variable[name] = _kl_by_explicit_division(posterior, name, improper)
    return kl_by_variable, improper


def _kl_by_explicit_division(posterior: Posterior, name: str, improper: np.ndarray) -> np.ndarray:
    values = np.zeros(posterior.n_sites)
    fitted = {name: posterior.globals[name]}
    for site in range(posterior.n_sites):
        try:
            divided = divide(posterior, [site])
        except ValueError:
            improper[site] = True
            continue
        values[site] = posterior_kl(fitted, {name: divided[name]})
    return values


def find_mixture(posterior: Posterior) -> tuple[GaussianMixtureFactor, CategoricalFactor]:
    """The Gaussian mixture likelihood and the categorical factor of its assignments."""
    graph = posterior.graph
    for factor in graph.factors.values():
        if isinstance(factor, GaussianMixtureFactor):
            for other in graph.factors_of(factor.assignment):
                if isinstance(other, CategoricalFactor):
                    return factor, other
    raise ValueError(
        "this summary needs a Gaussian mixture (a GaussianMixtureFactor whose assignment has a "
        "CategoricalFactor prior); the graph has none"
    )


def mixture_log_predictive(posterior: Posterior, q: np.ndarray, resp: np.ndarray,
                           improper: np.ndarray) -> np.ndarray:
    """log p(x_i | data without the weight resp_i) for the Gaussian mixture, shape (N,).

    With ``resp`` all zero this is the posterior predictive density at the
    points whose quadratic forms are ``q``.
    """
    likelihood, categorical = find_mixture(posterior)
    components = posterior.globals[likelihood.components]
    weights = posterior.globals[categorical.weights]
    return loo_kernels.mixture_loo_log_predictive(
        q, np.ascontiguousarray(resp), components.beta, components.dof,
        components.wishart.logdet_scale(), weights.concentration, float(components.dim), improper,
    )


def mixture_mean_shift(posterior: Posterior) -> np.ndarray:
    """m'_k - m_k = -r_ik (x_i - m_k) / (beta_k - r_ik), shape (N, K, D)."""
    likelihood, _ = find_mixture(posterior)
    components = posterior.globals[likelihood.components]
    X = posterior.data[likelihood.observed]
    resp = posterior.locals[likelihood.assignment]
    factor = resp / (components.beta - resp)
    return -factor[:, :, None] * (X[:, None, :] - components.mean[None, :, :])


def mixture_weight_mean_shift(posterior: Posterior) -> np.ndarray:
    """E[pi_k] without site i minus E[pi_k], shape (N, K)."""
    _, categorical = find_mixture(posterior)
    alpha = posterior.globals[categorical.weights].concentration
    resp = posterior.locals[categorical.assignment]
    total = alpha.sum()
    return (alpha - resp) / (total - resp.sum(axis=1, keepdims=True)) - alpha / total


def mixture_weight_mode_shift(posterior: Posterior) -> np.ndarray:
    """Dirichlet mode without site i minus the fitted mode, shape (N, K).

    The mode (alpha_k - 1) / (sum alpha - K) exists only when every
    concentration exceeds 1, with and without each site.
    """
    _, categorical = find_mixture(posterior)
    alpha = posterior.globals[categorical.weights].concentration
    resp = posterior.locals[categorical.assignment]
    n_components = alpha.size
    divided = alpha - resp
    if np.any(divided <= 1.0):
        raise ValueError(
            "the Dirichlet mode shift is undefined: removing some site leaves a concentration "
            f"at or below 1 (minimum {divided.min():.4g}); use the expected weight shift instead"
        )
    fitted_mode = (alpha - 1.0) / (alpha.sum() - n_components)
    return (divided - 1.0) / (divided.sum(axis=1, keepdims=True) - n_components) - fitted_mode
