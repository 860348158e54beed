"""Gaussian-mixture CAVI and all-site LOO summaries over data streamed in chunks.

For data larger than memory: a numpy array or ``numpy.memmap`` of shape
(N, D) is read ``chunk_size`` rows at a time, and a callable that returns a
fresh iterator of (rows, D) arrays is iterated once per pass. Responsibilities
are never stored: each pass recomputes them for one chunk from the current
global posterior, so working memory is a few arrays of (chunk rows, K) and
(chunk rows, D) plus the O(K D^2) posterior. The summaries are yielded chunk
by chunk; ``site_summaries`` collects them into arrays of length N.

The model and priors are those of :class:`fg_influence.models.GaussianMixture`
(scikit-learn's defaults, resolved from the data's mean and covariance in a
first pass), and each iteration is the same E-step, ELBO and M-step as
:func:`fg_influence.inference.fit_cavi` with the responsibilities of every
row updated from the same global posterior.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_int, check_random_state, check_real, check_tol
from ..exceptions import ConvergenceWarning
from ..families import Dirichlet, NormalWishart
from ..families._linalg import multivariate_polygammas
from ..kernels import loo as loo_kernels
from ..kernels import mixture as mixture_kernels
from .threads import numba_threads

SUMMARIES = ("kl", "loo_log_predictive", "mean_shift_norm", "improper")


@dataclass
class StreamingMixtureFit:
    """A Gaussian-mixture posterior fitted over streamed data.

    Attributes
    ----------
    weights : Dirichlet
        q(pi), batch shape ().
    components : NormalWishart
        q(mu_k, Lambda_k), batch shape (K,).
    weights_prior, components_prior : Dirichlet, NormalWishart
        The priors, resolved from the data.
    n_sites : int
        Rows seen in each pass.
    elbo_history : list of float
        ELBO after each E-step.
    n_iter : int
    converged : bool
    """

    weights: Dirichlet
    components: NormalWishart
    weights_prior: Dirichlet
    components_prior: NormalWishart
    n_sites: int
    elbo_history: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False

    @property
    def elbo(self) -> float:
        return self.elbo_history[-1] if self.elbo_history else float("nan")


def iter_chunks(data, chunk_size: int) -> Iterator[np.ndarray]:
    """Yield C-contiguous float64 blocks of at most ``chunk_size`` rows from ``data``.

    ``data`` is an (N, D) array or memmap, or a callable returning a fresh
    iterator of (rows, D) arrays. Each block is checked for finite values.
    """
    if callable(data):
        source = data()
    else:
        if not hasattr(data, "shape") or len(data.shape) != 2:
            raise ValueError(
                "data must be an (N, D) array or memmap, or a callable returning an iterator of "
                f"(rows, D) arrays; got {type(data).__name__} with shape {getattr(data, 'shape', None)}"
            )
        source = (data[start:start + chunk_size] for start in range(0, data.shape[0], chunk_size))
    dim = None
    for block in source:
        block = np.ascontiguousarray(block, dtype=np.float64)
        if block.ndim != 2 or block.shape[0] == 0:
            raise ValueError(f"every chunk must be a non-empty (rows, D) array, got shape {block.shape}")
        if dim is None:
            dim = block.shape[1]
        elif block.shape[1] != dim:
            raise ValueError(f"every chunk must have {dim} columns like the first, got shape {block.shape}")
        if not np.all(np.isfinite(block)):
            raise ValueError("data must be finite; a chunk contains NaN or infinity")
        yield block


def _data_moments(data, chunk_size):
    """Row count, mean and covariance (ddof = 1) in one pass, as numpy.cov computes them."""
    count = 0
    total = None
    for block in iter_chunks(data, chunk_size):
        total = block.sum(axis=0) if total is None else total + block.sum(axis=0)
        count += block.shape[0]
    if count < 2:
        raise ValueError(f"data must have at least 2 rows to fit a mixture, got {count}")
    mean = total / count
    scatter = np.zeros((mean.size, mean.size))
    for block in iter_chunks(data, chunk_size):
        centred = block - mean
        scatter += centred.T @ centred
    return count, mean, scatter / (count - 1)


def _priors(n_components, dim, mean, covariance, weight_concentration_prior, mean_precision_prior,
            degrees_of_freedom_prior):
    alpha0 = 1.0 / n_components if weight_concentration_prior is None else check_real(
        weight_concentration_prior, "weight_concentration_prior", low=0.0)
    beta0 = check_real(mean_precision_prior, "mean_precision_prior", low=0.0)
    nu0 = float(dim) if degrees_of_freedom_prior is None else check_real(
        degrees_of_freedom_prior, "degrees_of_freedom_prior")
    if nu0 <= dim - 1:
        raise ValueError(
            f"degrees_of_freedom_prior must be greater than D - 1 = {dim - 1}, got {nu0}; use at least {dim}"
        )
    covariance = np.atleast_2d(covariance)
    if not np.all(np.linalg.eigvalsh(covariance) > 0):
        covariance = covariance + np.eye(dim) * max(1e-6, 1e-6 * np.trace(covariance) / dim)
    scale0 = np.linalg.inv(covariance)
    weights = Dirichlet(np.full(n_components, alpha0))
    components = NormalWishart(
        np.tile(mean, (n_components, 1)), np.full(n_components, beta0),
        np.tile(0.5 * (scale0 + scale0.T), (n_components, 1, 1)), np.full(n_components, nu0),
    )
    return weights, components


def _responsibilities(block, weights, components):
    """E-step for one chunk: (resp, log-normaliser, q)."""
    q = mixture_kernels.quadratic_forms(
        block, np.ascontiguousarray(components.mean), np.ascontiguousarray(components.wishart._chol))
    logits = mixture_kernels.expected_loglik_from_quadratic_forms(
        q, components.beta, components.dof, components.wishart.expected_logdet(), float(components.dim))
    logits += weights.expected_log()
    resp, log_norm = mixture_kernels.normalize_log_resp(logits)
    return resp, log_norm, q


def _m_step(weights_prior, components_prior, counts, sums, outer):
    weights = Dirichlet.from_natural(weights_prior.natural_params()[0] + counts)
    natural = [np.array(p, dtype=float) for p in components_prior.natural_params()]
    for total, message in zip(natural, (sums, counts, outer, counts)):
        total += message
    return weights, NormalWishart.from_natural(*natural)


def _empty_stats(n_components, dim):
    return np.zeros(n_components), np.zeros((n_components, dim)), np.zeros((n_components, dim, dim))


def fit_mixture_streaming(data, n_components: int, *, chunk_size: int = 65536,
                          weight_concentration_prior=None, mean_precision_prior=1.0,
                          degrees_of_freedom_prior=None, tol: float = 1e-9, max_iter: int = 1000,
                          random_state=None, n_jobs=None, warn: bool = True) -> StreamingMixtureFit:
    """Fit a full-covariance Gaussian mixture by CAVI, reading the data chunk by chunk.

    Parameters
    ----------
    data : ndarray or numpy.memmap of shape (N, D), or callable
        The rows, or a callable returning a fresh iterator of (rows, D)
        arrays (called once per pass, so it must yield the same rows in the
        same order every time).
    n_components : int
        K.
    chunk_size : int
        Rows per chunk when ``data`` is an array; memory use grows with it.
    weight_concentration_prior, mean_precision_prior, degrees_of_freedom_prior
        As in :class:`fg_influence.models.GaussianMixture`; the mean and
        covariance priors are the data mean and covariance.
    tol, max_iter
        Stop when the ELBO changes by at most ``tol * |ELBO|``, or after
        ``max_iter`` iterations.
    random_state : None, int or numpy.random.Generator
        Seed of the starting responsibilities, drawn from a flat Dirichlet
        chunk by chunk in row order (so they equal one draw of shape (N, K)
        from the same generator).
    n_jobs : int, optional
        Threads for the Numba kernels; None uses all NUMBA_NUM_THREADS.
    warn : bool
        Raise a ConvergenceWarning when CAVI did not converge.

    Returns
    -------
    StreamingMixtureFit
    """
    n_components = check_int(n_components, "n_components", minimum=1)
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    tol = check_tol(tol)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    rng = check_random_state(random_state)
    n, mean, covariance = _data_moments(data, chunk_size)
    if n_components > n:
        raise ValueError(f"n_components must be at most the number of rows ({n}), got {n_components}")
    dim = mean.size
    weights_prior, components_prior = _priors(
        n_components, dim, mean, covariance, weight_concentration_prior, mean_precision_prior,
        degrees_of_freedom_prior)

    with numba_threads(n_jobs):
        counts, sums, outer = _empty_stats(n_components, dim)
        for block in iter_chunks(data, chunk_size):
            resp = rng.dirichlet(np.ones(n_components), size=block.shape[0])
            block_counts, block_sums, block_outer = mixture_kernels.weighted_gaussian_stats(block, resp)
            counts += block_counts
            sums += block_sums
            outer += block_outer
        weights, components = _m_step(weights_prior, components_prior, counts, sums, outer)
        fit = StreamingMixtureFit(weights, components, weights_prior, components_prior, n)

        previous = -np.inf
        for iteration in range(1, max_iter + 1):
            counts, sums, outer = _empty_stats(n_components, dim)
            log_norm_total = 0.0
            for block in iter_chunks(data, chunk_size):
                resp, log_norm, _ = _responsibilities(block, fit.weights, fit.components)
                log_norm_total += float(np.sum(log_norm))
                block_counts, block_sums, block_outer = mixture_kernels.weighted_gaussian_stats(block, resp)
                counts += block_counts
                sums += block_sums
                outer += block_outer
            # As in fit_cavi: right after the E-step the ELBO is the summed
            # log-normalisers minus the KL of the globals from their priors.
            elbo = log_norm_total - float(np.sum(fit.weights.kl(weights_prior))) - float(
                np.sum(fit.components.kl(components_prior)))
            fit.elbo_history.append(elbo)
            fit.weights, fit.components = _m_step(weights_prior, components_prior, counts, sums, outer)
            fit.n_iter = iteration
            if abs(elbo - previous) <= tol * abs(elbo):
                fit.converged = True
                break
            previous = elbo

    if warn and not fit.converged:
        warnings.warn(
            f"CAVI did not converge in max_iter={max_iter} iterations; increase max_iter or loosen tol",
            ConvergenceWarning, stacklevel=2,
        )
    return fit


def iter_site_summaries(fit: StreamingMixtureFit, data, *, chunk_size: int = 65536,
                        n_jobs=None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(first_row, summaries)`` for each chunk of ``data``.

    ``summaries`` maps each name in ``SUMMARIES`` to an array over the
    chunk's rows: the KL(q || q without the row) over both global factors
    (+inf where the divided posterior is improper), the LOO log predictive
    density (-inf there), the largest mean shift under E[Lambda_k], and the
    improper flags. The responsibilities are those of an E-step from
    ``fit``'s final posterior, so the values equal
    ``InfluenceResult`` on a posterior whose responsibilities were updated
    once more after the last M-step.
    """
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    weights, components = fit.weights, fit.components
    dim = components.dim
    polygammas = multivariate_polygammas(0.5 * components.dof, dim)
    weight_polygammas = weights.polygammas()
    logdet_scale = components.wishart.logdet_scale()
    start = 0
    for block in iter_chunks(data, chunk_size):
        if block.shape[1] != dim:
            raise ValueError(f"data must have {dim} columns like the fitted data, got {block.shape[1]}")
        with numba_threads(n_jobs):
            resp, _, q = _responsibilities(block, weights, components)
            improper = np.zeros(block.shape[0], dtype=bool)
            kl = loo_kernels.normal_wishart_downdate_kl(
                q, resp, components.beta, components.dof, polygammas, float(dim), improper)
            kl += loo_kernels.dirichlet_downdate_kl(weights.concentration, resp, *weight_polygammas, improper)
            log_predictive = loo_kernels.mixture_loo_log_predictive(
                q, resp, components.beta, components.dof, logdet_scale, weights.concentration, float(dim),
                improper.copy())
            shift = loo_kernels.mean_shift_norm(q, resp, components.beta, components.dof)
        kl[improper] = np.inf
        log_predictive[improper] = -np.inf
        yield start, {"kl": kl, "loo_log_predictive": log_predictive, "mean_shift_norm": shift,
                      "improper": improper}
        start += block.shape[0]


def site_summaries(fit: StreamingMixtureFit, data, *, chunk_size: int = 65536, n_jobs=None,
                   out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """All-site summaries of ``iter_site_summaries`` gathered into arrays of length N.

    ``out`` may supply the destination arrays (for example memmaps) by name;
    the others are allocated, 8 bytes per row each (1 for ``improper``).
    """
    out = {} if out is None else dict(out)
    for name in SUMMARIES:
        if name not in out:
            out[name] = np.empty(fit.n_sites, dtype=bool if name == "improper" else np.float64)
        elif out[name].shape != (fit.n_sites,):
            raise ValueError(f"out[{name!r}] must have shape ({fit.n_sites},), got {out[name].shape}")
    seen = 0
    for start, values in iter_site_summaries(fit, data, chunk_size=chunk_size, n_jobs=n_jobs):
        stop = start + values["kl"].size
        if stop > fit.n_sites:
            raise ValueError(f"data has more rows than the {fit.n_sites} the fit saw")
        for name in SUMMARIES:
            out[name][start:stop] = values[name]
        seen = stop
    if seen != fit.n_sites:
        raise ValueError(f"data has {seen} rows but the fit saw {fit.n_sites}")
    return out


__all__ = ["SUMMARIES", "StreamingMixtureFit", "fit_mixture_streaming", "iter_chunks", "iter_site_summaries",
           "site_summaries"]
