"""Kernels for the linear-response summaries of a Gaussian mixture.

``predictive_statistic_gaps`` serves the all-site pass: it gives, for
chosen (site, component) pairs, the gradient of a component's divided
predictive log density with respect to its count coordinates, which the
first-order correction of the LOO predictive density contracts with each
site's response. ``corrected_normal_wishart_terms`` evaluates the KL and the
predictive density exactly at given corrected coordinates, for checks.

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

from ._special import digamma


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


@njit(cache=True, parallel=True)
def predictive_statistic_gaps(X, sites, comps, resp, mean, beta, scale, scale_mean, dof, upper_rows,
                              upper_cols):
    """mu(eta_d + f_i) - mu(eta_d) for each (site, component) pair, shape (n_pairs, Q).

    For a conjugate likelihood the predictive density of x_i is
    exp(A(eta + f_i) - A(eta)) times a constant, where A is the log-partition
    of component k's Normal-Wishart posterior in count coordinates eta and f_i
    the site statistics, so its gradient in eta is the difference of the
    expected statistics mu = grad A at eta + f_i and at eta. Here eta = eta_d
    is the posterior with site i's weight r_ik removed.

    Both eta_d and eta_d + f_i differ from the fit by a rank-one change along
    e = x_i - m: with w = W e and q = e^T W e,

        W_x = W - s_x w w^T,   m_x = m + h_x e,

    with scalars s_x and h_x. The statistics, in the coordinate order
    (t, kappa, upper(Psi), n), are E[Lambda mu] = nu W m,
    -E[mu^T Lambda mu] / 2 = -(D / beta + nu m^T W m) / 2, -E[Lambda_ab] / 2
    on the diagonal and -E[Lambda_ab] off it, and
    E[ln|Lambda|] / 2 = (psi_D(nu / 2) + D ln 2 + ln|W|) / 2. Since nu rises
    by 1, psi_D((nu_d + 1) / 2) - psi_D(nu_d / 2) telescopes to
    psi((nu_d + 1) / 2) - psi((nu_d + 1 - D) / 2).

    Parameters
    ----------
    X : (N, D) data.
    sites, comps : (n_pairs,) int64 site and component of each pair.
    resp : (N, K) responsibilities.
    mean, beta, scale, scale_mean, dof : fitted m (K, D), beta (K,), W (K, D, D),
        W m (K, D) and nu (K,).
    upper_rows, upper_cols : (U,) int64, the upper-triangle order of Psi.
    """
    n_pairs = sites.shape[0]
    d = X.shape[1]
    n_upper = upper_rows.shape[0]
    q_size = d + 1 + n_upper + 1
    out = np.zeros((n_pairs, q_size))
    for p in prange(n_pairs):
        i = sites[p]
        k = comps[p]
        r = resp[i, k]
        e = np.empty(d)
        w = np.empty(d)
        for a in range(d):
            e[a] = X[i, a] - mean[k, a]
        q = 0.0
        w_dot_m = 0.0
        for a in range(d):
            acc = 0.0
            for b in range(d):
                acc += scale[k, a, b] * e[b]
            w[a] = acc
            q += acc * e[a]
            w_dot_m += acc * mean[k, a]
        b_div = beta[k] - r
        nu_div = dof[k] - r
        ratio = beta[k] / b_div
        a_div = -r * ratio
        h_div = -r / b_div
        a_pred = a_div + b_div / (b_div + 1.0) * ratio * ratio
        h_pred = h_div + ratio / (b_div + 1.0)
        s_div = a_div / (1.0 + a_div * q)
        s_pred = a_pred / (1.0 + a_pred * q)
        # W_x m_x = W m + (h_x - s_x w^T m_x) w and w^T m_x = w^T m + h_x q.
        coef_div = h_div - s_div * (w_dot_m + h_div * q)
        coef_pred = h_pred - s_pred * (w_dot_m + h_pred * q)
        quad_div = 0.0
        quad_pred = 0.0
        for a in range(d):
            wm_div = scale_mean[k, a] + coef_div * w[a]
            wm_pred = scale_mean[k, a] + coef_pred * w[a]
            out[p, a] = (nu_div + 1.0) * wm_pred - nu_div * wm_div
            quad_div += (mean[k, a] + h_div * e[a]) * wm_div
            quad_pred += (mean[k, a] + h_pred * e[a]) * wm_pred
        out[p, d] = -0.5 * (d / (b_div + 1.0) + (nu_div + 1.0) * quad_pred - d / b_div - nu_div * quad_div)
        # nu_p W_p - nu_d W_d = W - sigma w w^T.
        sigma = (nu_div + 1.0) * s_pred - nu_div * s_div
        for u in range(n_upper):
            a = upper_rows[u]
            b = upper_cols[u]
            value = scale[k, a, b] - sigma * w[a] * w[b]
            out[p, d + 1 + u] = -0.5 * value if a == b else -value
        out[p, q_size - 1] = 0.5 * (digamma(0.5 * (nu_div + 1.0)) - digamma(0.5 * (nu_div + 1.0 - d))
                                    - math.log1p(a_pred * q) + math.log1p(a_div * q))
    return out


@njit(cache=True)
def normal_wishart_features(X, upper_rows, upper_cols, out):
    """Fill ``out`` (n, Q) with the site statistics (x, 1, upper(x x^T), 1) of each row of X."""
    n, d = X.shape
    n_upper = upper_rows.shape[0]
    for i in range(n):
        for a in range(d):
            out[i, a] = X[i, a]
        out[i, d] = 1.0
        for u in range(n_upper):
            out[i, d + 1 + u] = X[i, upper_rows[u]] * X[i, upper_cols[u]]
        out[i, d + 1 + n_upper] = 1.0
    return out


@njit(cache=True)
def scatter_add_scaled(out, rows, weights, values):
    """Add weights[j] * values[j] to row rows[j] of ``out`` for each j (rows may repeat)."""
    width = values.shape[1]
    for j in range(rows.shape[0]):
        row = rows[j]
        weight = weights[j]
        for c in range(width):
            out[row, c] += weight * values[j, c]


@njit(cache=True, parallel=True)
def monomial_moments(base, slots, parents, lasts):
    """Products of up to four entries of each row of ``base``, shape (n, S).

    ``slots`` (S, 4) lists, for monomial s, the columns of ``base`` whose
    product it is; -1 stands for the factor 1. Where ``parents[s]`` is at
    least 0, monomial s is monomial ``parents[s]`` (which comes before s)
    times column ``lasts[s]`` of ``base``, one multiplication per monomial;
    otherwise the listed entries are multiplied out.
    """
    n = base.shape[0]
    n_monomials, width = slots.shape
    out = np.empty((n, n_monomials))
    for i in prange(n):
        for s in range(n_monomials):
            parent = parents[s]
            if parent >= 0:
                out[i, s] = out[i, parent] * base[i, lasts[s]]
                continue
            value = 1.0
            for slot in range(width):
                column = slots[s, slot]
                if column >= 0:
                    value *= base[i, column]
            out[i, s] = value
    return out
