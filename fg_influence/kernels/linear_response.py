"""Kernels for the linear-response summaries of a Gaussian mixture.

After the linear-response correction every site has its own Normal-Wishart
posterior for every component, given in count coordinates: t' = beta' m',
kappa' = beta', the upper triangle of Psi' = W'^-1 + beta' m' m'^T and
n' = nu' - D. Unlike a single-site division, the correction changes Psi'
by a full-rank matrix, so each (site, component) pair needs a Cholesky
factor of W'^-1, which costs O(D^3).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _multi_lgamma(a, d):
    total = d * (d - 1) / 4.0 * math.log(math.pi)
    for j in range(1, d + 1):
        total += math.lgamma(a + (1.0 - j) / 2.0)
    return total


@njit(cache=True)
def _cholesky_in_place(matrix, d):
    """Lower Cholesky factor of ``matrix`` in its lower triangle; False if not positive definite."""
    for j in range(d):
        acc = matrix[j, j]
        for p in range(j):
            acc -= matrix[j, p] * matrix[j, p]
        if not acc > 0.0:
            return False
        diag = math.sqrt(acc)
        matrix[j, j] = diag
        for i in range(j + 1, d):
            acc = matrix[i, j]
            for p in range(j):
                acc -= matrix[i, p] * matrix[j, p]
            matrix[i, j] = acc / diag
    return True


@njit(cache=True, parallel=True)
def corrected_normal_wishart_terms(X, weighted_mean, beta_new, psi_upper, dof_offset, upper_rows,
                                   upper_cols, mean, beta, scale, logdet_scale, dof,
                                   multi_digamma_half_dof, improper):
    """Per-component KL and Student-t log density under corrected Normal-Wishart posteriors.

    Parameters
    ----------
    X : (n, D) rows of the sites.
    weighted_mean, beta_new, psi_upper, dof_offset : (n, K, D), (n, K), (n, K, U), (n, K)
        Corrected count coordinates t', kappa', upper(Psi') and nu' - D, with
        U = D (D + 1) / 2 entries ordered as ``upper_rows``, ``upper_cols``.
    mean, beta, scale, logdet_scale, dof, multi_digamma_half_dof : fitted
        m (K, D), beta (K,), W (K, D, D), ln|W| (K,), nu (K,) and psi_D(nu / 2) (K,).
    improper : (n,) bool
        Set to True for a site whose corrected posterior is improper for some
        component (kappa' <= 0, nu' <= D - 1 or W'^-1 not positive definite).

    Returns
    -------
    kl : (n, K)
        KL(NW(m, beta, W, nu) || NW(m', beta', W', nu')); 0 for improper sites.
    log_student : (n, K)
        ln St(x_i | m', (nu' + 1 - D) beta' / (1 + beta') W', nu' + 1 - D); 0 for improper sites.
    """
    n, d = X.shape
    k_count = mean.shape[0]
    n_upper = upper_rows.shape[0]
    kl = np.zeros((n, k_count))
    log_student = np.zeros((n, k_count))
    for i in prange(n):
        chol = np.empty((d, d))
        m_new = np.empty(d)
        diff = np.empty(d)
        for k in range(k_count):
            b_new = beta_new[i, k]
            nu_new = dof_offset[i, k] + d
            if not (b_new > 0.0 and nu_new > d - 1.0):
                improper[i] = True
                break
            for a in range(d):
                m_new[a] = weighted_mean[i, k, a] / b_new
            # W'^-1 = Psi' - beta' m' m'^T, filled symmetrically from the upper triangle.
            for u in range(n_upper):
                a = upper_rows[u]
                b = upper_cols[u]
                value = psi_upper[i, k, u] - b_new * m_new[a] * m_new[b]
                chol[a, b] = value
                chol[b, a] = value
            trace = 0.0
            for a in range(d):
                for b in range(d):
                    trace += chol[a, b] * scale[k, a, b]
            if not _cholesky_in_place(chol, d):
                improper[i] = True
                break
            logdet_inv_new = 0.0
            for a in range(d):
                logdet_inv_new += 2.0 * math.log(chol[a, a])

            # KL between the Wishart marginals, with ln|W'^-1 W| = ln|W'^-1| + ln|W|.
            b_old = beta[k]
            nu_old = dof[k]
            kl_wishart = (-0.5 * nu_new * (logdet_inv_new + logdet_scale[k])
                          + 0.5 * nu_old * (trace - d)
                          + _multi_lgamma(0.5 * nu_new, d) - _multi_lgamma(0.5 * nu_old, d)
                          + 0.5 * (nu_old - nu_new) * multi_digamma_half_dof[k])
            # E over Lambda of the KL between the conditional Gaussians of mu.
            mahal_means = 0.0
            for a in range(d):
                diff[a] = mean[k, a] - m_new[a]
            for a in range(d):
                for b in range(d):
                    mahal_means += diff[a] * scale[k, a, b] * diff[b]
            kl_mean = 0.5 * (d * b_new / b_old - d - d * math.log(b_new / b_old)
                             + b_new * nu_old * mahal_means)
            kl[i, k] = kl_wishart + kl_mean

            # Student-t predictive of component k at x_i: (x - m')^T W' (x - m')
            # is the squared length of C^-1 (x - m') with C C^T = W'^-1.
            for a in range(d):
                acc = X[i, a] - m_new[a]
                for p in range(a):
                    acc -= chol[a, p] * diff[p]
                diff[a] = acc / chol[a, a]
            mahal_x = 0.0
            for a in range(d):
                mahal_x += diff[a] * diff[a]
            t_dof = nu_new + 1.0 - d
            precision_scale = t_dof * b_new / (1.0 + b_new)
            logdet = d * math.log(precision_scale) - logdet_inv_new
            log_student[i, k] = (math.lgamma(0.5 * (t_dof + d)) - math.lgamma(0.5 * t_dof)
                                 - 0.5 * d * math.log(t_dof * math.pi) + 0.5 * logdet
                                 - 0.5 * (t_dof + d) * math.log1p(precision_scale * mahal_x / t_dof))
        if improper[i]:
            for k in range(k_count):
                kl[i, k] = 0.0
                log_student[i, k] = 0.0
    return kl, log_student
