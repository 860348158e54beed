"""MAP estimation of a Gaussian mixture by EM, and exact leave-out refits warm-started from the MAP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2

from .._validation import as_float_array, check_int, check_random_state, check_real, check_site_indices
from .mixture_loss import log_prior, natural_scales, responsibilities
from .parameters import MixtureParameters, MixturePrior, check_parameters

#: Largest scaled change of any coordinate at which exact refits stop. EM
#: converges linearly, so the tolerance is on the parameters, not the loss.
REFIT_TOL = 1e-10
REFIT_MAX_ITER = 10000


@dataclass(frozen=True)
class MapFit:
    """A MAP fit of a Gaussian mixture.

    Attributes
    ----------
    parameters : MixtureParameters
    resp : ndarray, shape (N, K)
        Responsibilities at ``parameters``.
    loss : float
        l(theta) = -log p(X | theta) - log p(theta) at ``parameters``.
    n_iter : int
    converged : bool
    """

    parameters: MixtureParameters
    resp: np.ndarray
    loss: float
    n_iter: int
    converged: bool


def m_step(X: np.ndarray, resp: np.ndarray, prior: MixturePrior) -> MixtureParameters:
    """Compute the MAP parameters given responsibilities (the M-step).

    pi_k = (N_k + alpha0 - 1) / (N + K alpha0 - K),
    mu_k = (beta0 m0 + sum_i gamma_ik x_i) / (beta0 + N_k),
    Lambda_k^-1 = (W0^-1 + sum_i gamma_ik u u^T + beta0 v v^T) / (N_k + nu0 - D)
    with u = x_i - mu_k and v = mu_k - m0.
    """
    n, d = X.shape
    k = resp.shape[1]
    alpha0, beta0, nu0 = prior.weight_concentration_prior, prior.mean_precision_prior, prior.degrees_of_freedom_prior
    counts = resp.sum(axis=0)
    weight_totals = counts + alpha0 - 1.0
    precision_totals = counts + nu0 - d
    for name, totals, rule in (("weight", weight_totals, "N_k + alpha0 - 1"),
                               ("precision", precision_totals, "N_k + nu0 - D")):
        if np.any(totals <= 0):
            component = int(np.argmin(totals))
            raise ValueError(
                f"the MAP {name} of component {component} is undefined: {rule} = {totals[component]:.3g} "
                f"is not positive because the component holds almost no data; use fewer components "
                f"or a larger weight_concentration_prior / degrees_of_freedom_prior"
            )

    weights = weight_totals / (n + k * alpha0 - k)
    means = (beta0 * prior.mean_prior + resp.T @ X) / (beta0 + counts)[:, None]
    residuals = X[:, None, :] - means[None]
    offsets = means - prior.mean_prior
    scatter = (prior.covariance_prior[None]
               + np.einsum("nk,nka,nkb->kab", resp, residuals, residuals)
               + beta0 * offsets[:, :, None] * offsets[:, None, :])
    precisions = np.linalg.inv(scatter / precision_totals[:, None, None])
    return MixtureParameters(weights, means, 0.5 * (precisions + np.swapaxes(precisions, 1, 2)))


def _initial_resp(X, n_components, rng):
    _, labels = kmeans2(X, n_components, minit="++", seed=rng)
    resp = np.full((X.shape[0], n_components), 1e-3)
    resp[np.arange(X.shape[0]), labels] = 1.0
    return resp / resp.sum(axis=1, keepdims=True)


def _check_init(init, X, n_components, rng):
    if init is None:
        return _initial_resp(X, n_components, rng), None
    if isinstance(init, MixtureParameters):
        if init.n_components != n_components:
            raise ValueError(
                f"init has {init.n_components} components but n_components is {n_components}"
            )
        return None, init
    resp = as_float_array(init, "init", ndim=2, shape=(X.shape[0], n_components))
    if np.any(resp < 0) or not np.allclose(resp.sum(axis=1), 1.0):
        raise ValueError("init responsibilities must be non-negative and each row must sum to 1")
    return resp, None


def fit_map_em(X, n_components: int, prior: MixturePrior, *, init=None, tol: float = REFIT_TOL,
               max_iter: int = REFIT_MAX_ITER, random_state=None) -> MapFit:
    """Find a MAP estimate of a Gaussian mixture by EM.

    Parameters
    ----------
    X : array_like, shape (N, D)
    n_components : int
    prior : MixturePrior
    init : None, MixtureParameters or array_like of shape (N, K)
        Starting parameters, starting responsibilities, or None for a
        k-means++ start drawn with ``random_state``.
    tol : float
        EM stops when no coordinate of theta moves by more than ``tol``
        times its natural scale (see :func:`natural_scales`).
    max_iter : int
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    MapFit
    """
    X = as_float_array(X, "X", ndim=2)
    if X.shape[1] != prior.dim:
        raise ValueError(f"X must have {prior.dim} columns like the prior, got shape {X.shape}")
    k = check_int(n_components, "n_components", minimum=1, maximum=X.shape[0])
    tol = check_real(tol, "tol", low=0.0)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    resp, parameters = _check_init(init, X, k, check_random_state(random_state))
    if parameters is None:
        parameters = m_step(X, resp, prior)
    check_parameters(parameters, prior)

    converged = False
    for iteration in range(1, max_iter + 1):
        resp, _ = responsibilities(X, parameters)
        updated = m_step(X, resp, prior)
        change = np.abs(updated.to_vector() - parameters.to_vector()) / natural_scales(updated)
        parameters = updated
        if change.max() <= tol:
            converged = True
            break
    resp, site_loss = responsibilities(X, parameters)
    return MapFit(parameters, resp, float(site_loss.sum() - log_prior(parameters, prior)), iteration, converged)


def refit_without(X, fit: MapFit, prior: MixturePrior, sites, *, tol: float = REFIT_TOL,
                  max_iter: int = REFIT_MAX_ITER) -> MapFit:
    """Re-run EM to convergence without the given sites, warm-started from the MAP ``fit``.

    The warm start keeps each component's label, so the refit's parameters
    can be subtracted from the fit's.
    """
    X = as_float_array(X, "X", ndim=2)
    sites = check_site_indices(sites, X.shape[0])
    keep = np.ones(X.shape[0], dtype=bool)
    keep[sites] = False
    return fit_map_em(X[keep], fit.parameters.n_components, prior, init=fit.parameters, tol=tol, max_iter=max_iter)


def exact_shifts(X, fit: MapFit, prior: MixturePrior, groups, *, tol: float = REFIT_TOL,
                 max_iter: int = REFIT_MAX_ITER, progress=None) -> np.ndarray:
    """theta refitted without each group minus the MAP theta, shape (len(groups), P).

    ``progress(done, total)`` is called after each refit when given.
    """
    theta = fit.parameters.to_vector()
    shifts = np.empty((len(groups), theta.size))
    for index, group in enumerate(groups):
        shifts[index] = refit_without(X, fit, prior, group, tol=tol, max_iter=max_iter).parameters.to_vector() - theta
        if progress is not None:
            progress(index + 1, len(groups))
    return shifts
