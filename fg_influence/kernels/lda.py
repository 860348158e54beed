"""Per-document variational updates of latent Dirichlet allocation (Blei, Ng and Jordan 2003)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._special import digamma


@njit(cache=True, parallel=True)
def document_updates(word_ids, counts, offsets, exp_elog_beta, alpha, gamma_start, max_inner, tol):
    """Update every document's topic proportions and word assignments to convergence.

    Iterates gamma_dk = alpha + sum_w n_dw phi_dwk with
    phi_dwk proportional to exp(E[ln theta_dk]) exp(E[ln beta_kw]) until the
    mean absolute change of gamma_d is below ``tol`` or ``max_inner``
    sweeps have run.

    Parameters
    ----------
    word_ids : int64 array, shape (n_nonzero,)
    counts : float64 array, shape (n_nonzero,)
    offsets : int64 array, shape (n_documents + 1,)
    exp_elog_beta : float64 array, shape (K, V)
        exp(E[ln beta_kw]).
    alpha : float
        Symmetric Dirichlet concentration of the topic proportions.
    gamma_start : float64 array, shape (n_documents, K)

    Returns
    -------
    gamma : ndarray, shape (n_documents, K)
    phi : ndarray, shape (n_nonzero, K)
        q(z = k) of each distinct word of each document.
    """
    n_documents = offsets.shape[0] - 1
    k = exp_elog_beta.shape[0]
    gamma = gamma_start.copy()
    phi = np.empty((word_ids.shape[0], k))
    for d in prange(n_documents):
        start = offsets[d]
        stop = offsets[d + 1]
        exp_elog_theta = np.empty(k)
        new_gamma = np.empty(k)
        for _ in range(max_inner):
            total = 0.0
            for j in range(k):
                total += gamma[d, j]
            digamma_total = digamma(total)
            for j in range(k):
                exp_elog_theta[j] = np.exp(digamma(gamma[d, j]) - digamma_total)
                new_gamma[j] = alpha
            for row in range(start, stop):
                word = word_ids[row]
                norm = 0.0
                for j in range(k):
                    phi[row, j] = exp_elog_theta[j] * exp_elog_beta[j, word]
                    norm += phi[row, j]
                for j in range(k):
                    phi[row, j] /= norm
                    new_gamma[j] += counts[row] * phi[row, j]
            change = 0.0
            for j in range(k):
                change += abs(new_gamma[j] - gamma[d, j])
                gamma[d, j] = new_gamma[j]
            if change / k < tol:
                break
        # phi matches the final gamma's E[ln theta] only up to the last
        # change; one more assignment sweep makes the pair consistent.
        total = 0.0
        for j in range(k):
            total += gamma[d, j]
        digamma_total = digamma(total)
        for j in range(k):
            exp_elog_theta[j] = np.exp(digamma(gamma[d, j]) - digamma_total)
        for row in range(start, stop):
            word = word_ids[row]
            norm = 0.0
            for j in range(k):
                phi[row, j] = exp_elog_theta[j] * exp_elog_beta[j, word]
                norm += phi[row, j]
            for j in range(k):
                phi[row, j] /= norm
    return gamma, phi
