"""Closed-form leave-one-out summaries for Dirichlet and Normal-Wishart posteriors.

Removing site i from component k of a Normal-Wishart posterior with
weight r = r_ik and u = x_i - m_k is a rank-one downdate. With
c = beta r / (beta - r) and q = u^T W u:

    beta' = beta - r,  nu' = nu - r
    m' - m = -r u / (beta - r)
    W'^-1 = W^-1 - c u u^T,  so  ln|W'| = ln|W| - ln(1 - c q)

Every summary below is therefore a scalar function of q_ik, r_ik and the
component's (beta, nu, ln|W|), which costs O(N K) once q is known. A
divided posterior is improper when beta' <= 0, nu' <= D - 1, c q >= 1 or a
Dirichlet concentration falls to zero or below; such sites are flagged and
their values are left at 0.
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


@njit(cache=True, parallel=True)
def normal_wishart_downdate_kl(q, resp, beta, dof, multi_digamma_half_dof, d, improper):
    """KL(q || q without site i) summed over components, shape (N,).

    ``multi_digamma_half_dof[k]`` is psi_D(nu_k / 2). Sites whose divided
    posterior is improper get ``improper[i] = True`` and a KL of 0.
    """
    n, k_count = q.shape
    out = np.zeros(n)
    for i in prange(n):
        total = 0.0
        for k in range(k_count):
            r = resp[i, k]
            if r == 0.0:
                continue
            b = beta[k]
            nu = dof[k]
            b_new = b - r
            nu_new = nu - r
            if b_new <= 0.0 or nu_new <= d - 1.0:
                improper[i] = True
                continue
            c = b * r / b_new
            one_minus = 1.0 - c * q[i, k]
            if one_minus <= 0.0:
                improper[i] = True
                continue
            # KL between the Wishart marginals, written with
            # ln|W'^-1 W| = ln(1 - c q) and tr(W'^-1 W) = D - c q.
            kl_wishart = (-0.5 * nu_new * math.log(one_minus) - 0.5 * nu * c * q[i, k]
                          + _multi_lgamma(0.5 * nu_new, d) - _multi_lgamma(0.5 * nu, d)
                          + 0.5 * r * multi_digamma_half_dof[k])
            # E over Lambda of KL between the conditional Gaussians of mu;
            # (m - m')^T W (m - m') = r^2 q / beta'^2.
            kl_mean = 0.5 * (d * b_new / b - d - d * math.log(b_new / b) + nu * r * r * q[i, k] / b_new)
            total += kl_wishart + kl_mean
        out[i] = total
    return out


@njit(cache=True, parallel=True)
def dirichlet_downdate_kl(alpha, resp, expected_log, improper):
    """KL(Dir(alpha) || Dir(alpha - r_i)) for every site, shape (N,).

    ``expected_log[k]`` is psi(alpha_k) - psi(sum alpha).
    """
    n, k_count = resp.shape
    total_alpha = 0.0
    lgamma_alpha = np.empty(k_count)
    for k in range(k_count):
        total_alpha += alpha[k]
        lgamma_alpha[k] = math.lgamma(alpha[k])
    lgamma_total = math.lgamma(total_alpha)
    out = np.zeros(n)
    for i in prange(n):
        removed = 0.0
        value = 0.0
        bad = False
        for k in range(k_count):
            r = resp[i, k]
            a_new = alpha[k] - r
            if a_new <= 0.0:
                bad = True
                break
            removed += r
            value += math.lgamma(a_new) - lgamma_alpha[k] + r * expected_log[k]
        if bad or total_alpha - removed <= 0.0:
            improper[i] = True
            continue
        out[i] = value + lgamma_total - math.lgamma(total_alpha - removed)
    return out


@njit(cache=True, parallel=True)
def mixture_loo_log_predictive(q, resp, beta, dof, logdet_scale, alpha, d, improper):
    """log p(x_i | data without i) under the divided posterior, shape (N,).

    The predictive density is a mixture of Student-t densities with weights
    alpha'_k / sum(alpha'), location m'_k, dof nu'_k + 1 - D and precision
    matrix (nu'_k + 1 - D) beta'_k / (1 + beta'_k) W'_k. Because
    x_i - m'_k = u beta / beta', its squared Mahalanobis length under W' is
    (beta / beta')^2 q / (1 - c q).
    """
    n, k_count = q.shape
    total_alpha = 0.0
    for k in range(k_count):
        total_alpha += alpha[k]
    out = np.zeros(n)
    terms = np.empty((n, k_count))
    for i in prange(n):
        if improper[i]:
            continue
        removed = 0.0
        top = -np.inf
        for k in range(k_count):
            r = resp[i, k]
            removed += r
            b_new = beta[k] - r
            nu_new = dof[k] - r
            c = beta[k] * r / b_new
            one_minus = 1.0 - c * q[i, k]
            t_dof = nu_new + 1.0 - d
            ratio = beta[k] / b_new
            mahal_w = ratio * ratio * q[i, k] / one_minus
            precision_scale = t_dof * b_new / (1.0 + b_new)
            logdet = d * math.log(precision_scale) + logdet_scale[k] - math.log(one_minus)
            delta2 = precision_scale * mahal_w
            log_t = (math.lgamma(0.5 * (t_dof + d)) - math.lgamma(0.5 * t_dof)
                     - 0.5 * d * math.log(t_dof * math.pi) + 0.5 * logdet
                     - 0.5 * (t_dof + d) * math.log1p(delta2 / t_dof))
            terms[i, k] = math.log(alpha[k] - r) + log_t
            if terms[i, k] > top:
                top = terms[i, k]
        acc = 0.0
        for k in range(k_count):
            acc += math.exp(terms[i, k] - top)
        out[i] = top + math.log(acc) - math.log(total_alpha - removed)
    return out
