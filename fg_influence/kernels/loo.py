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


#: Dimensions above which ``_multi_lgamma_downdate`` sums D lgamma terms directly.
_RECURSION_MAX_DIM = 200


@njit(cache=True)
def _multi_lgamma_downdate(a, h, d, lgamma_a, lgamma_a_half):
    """ln Gamma_D(a - h) - ln Gamma_D(a) for 0 <= h <= 1/2 and a - h > (D - 1) / 2.

    ``lgamma_a`` and ``lgamma_a_half`` are ln Gamma(a) and ln Gamma(a - 1/2),
    which depend only on the component.

    The arguments a + (1 - j) / 2 step down by 1 within each parity of j, so
    ln Gamma(y - m) = ln Gamma(y) - sum_{t=1..m} ln(y - t) turns the D
    lgamma pairs into two pairs and a product of ratios
    (y - t - h) / (y - t) in [2/3, 1]. The product is taken in log space
    every time it falls below 1e-200. When the smallest argument is below 1
    (a ratio could be near 0) or D is large, the terms are summed directly.
    """
    smallest = a - h - 0.5 * (d - 1)
    if smallest < 1.0 or d > _RECURSION_MAX_DIM:
        total = 0.0
        for j in range(1, d + 1):
            offset = (1.0 - j) / 2.0
            total += math.lgamma(a - h + offset) - math.lgamma(a + offset)
        return total
    total = 0.0
    log_product = 0.0
    for parity in range(2):
        y = a - 0.5 * parity
        count = (d - parity + 1) // 2
        if count == 0:
            continue
        lgamma_y = lgamma_a if parity == 0 else lgamma_a_half
        total += count * (math.lgamma(y - h) - lgamma_y)
        # Term m (m = 0..count-1) subtracts sum_{t<=m} ln ratio_t, so the
        # subtracted total is ln of the product over m of the cumulative ratios.
        cumulative = 1.0
        product = 1.0
        for t in range(1, count):
            cumulative *= (y - t - h) / (y - t)
            product *= cumulative
            if product < 1e-200:
                log_product += math.log(product)
                product = 1.0
        log_product += math.log(product)
    return total - log_product


@njit(cache=True)
def _lgamma_half_shift(x, d):
    """ln Gamma(x + D / 2) - ln Gamma(x) for x > 0, by ln Gamma(y + 1) = ln Gamma(y) + ln y."""
    if d > _RECURSION_MAX_DIM:
        return math.lgamma(x + 0.5 * d) - math.lgamma(x)
    total = 0.0
    y = x
    if d % 2 == 1:
        total = math.lgamma(x + 0.5) - math.lgamma(x)
        y = x + 0.5
    product = 1.0
    for t in range(d // 2):
        product *= y + t
        if product > 1e200:
            total += math.log(product)
            product = 1.0
    return total + math.log(product)


#: Below this value of r (1 + q), a Normal-Wishart component's KL term is
#: skipped, and below this value of r a Dirichlet component's share. The
#: term is O((r (1 + q))^2), while evaluating it costs an absolute rounding
#: error of about 1e-16 ln Gamma(nu / 2), far larger.
NEGLIGIBLE_WEIGHT = 1e-10


#: Below this value of r / a, the leave-one-out kernels take
#: ln Gamma(a - r) - ln Gamma(a) + r psi(a) from its Taylor series in r to
#: fifth order, which costs no lgamma. For every a > 0 each term of the
#: series is at most r / a times the one before (|psi^(n)(a) / psi^(n-1)(a)|
#: / (n + 1) peaks at 5 / (6 a) for n <= 5), so the series' relative error
#: is below 1e-12 here. The closed form loses more to rounding: about
#: 1e-16 |ln Gamma(a)| absolute, against a value of about r^2 psi'(a) / 2.
LGAMMA_SERIES_RATIO = 1e-3


@njit(cache=True)
def _lgamma_step_series(r, polygammas, k):
    """ln Gamma(a - r) - ln Gamma(a) + r psi(a) from ``polygammas[n, k]`` = psi^(n)(a), n = 1..4."""
    return r * r * (polygammas[1, k] / 2.0 - r * (polygammas[2, k] / 6.0
                                                  - r * (polygammas[3, k] / 24.0 - r * polygammas[4, k] / 120.0)))


#: Below this value of r (1 + q), a Normal-Wishart component's KL term is
#: taken from its Taylor series in r to third order (see
#: normal_wishart_downdate_kl), which costs no lgamma. The series' relative
#: error is about (r (1 + q))^2 / 2, so at most about 5e-9 here (checked
#: against 50-digit arithmetic). That is below the rounding of the closed
#: form for such small terms.
SERIES_WEIGHT = 1e-4


@njit(cache=True, parallel=True, nogil=True)
def normal_wishart_downdate_kl(q, resp, beta, dof, multi_polygammas, d, improper):
    """KL(q || q without site i) summed over components, shape (N,).

    ``multi_polygammas[n, k]`` is psi_D^(n)(nu_k / 2), the n-th derivative
    of psi_D (a sum of polygamma over the D arguments), for n = 0..4. Sites
    whose divided posterior is improper get ``improper[i] = True`` and a KL
    of 0.

    Where r (1 + q) is below SERIES_WEIGHT, a component's term is

        r^2 (nu q^2 / 4 - q / 2 + psi_D' / 8 + D / (4 beta^2) + nu q / (2 beta))
        + r^3 (nu q^2 / (2 beta) + nu q^3 / 6 - q / (2 beta) - q^2 / 4
               - psi_D'' / 48 + D / (6 beta^3) + nu q / (2 beta^2)),

    the Taylor series in r of the closed form used otherwise. In the closed
    form, ln Gamma_D(nu' / 2) - ln Gamma_D(nu / 2) + (r / 2) psi_D(nu / 2)
    is itself taken from its Taylor series in r / 2 where r / 2 is below
    LGAMMA_SERIES_RATIO times the smallest argument (nu - D + 1) / 2.
    """
    n, k_count = q.shape
    dim = int(d)
    lgamma_half_dof = np.empty(k_count)
    lgamma_half_dof_minus_half = np.empty(k_count)
    series_below = np.empty(k_count)
    for k in range(k_count):
        lgamma_half_dof[k] = math.lgamma(0.5 * dof[k])
        lgamma_half_dof_minus_half[k] = math.lgamma(0.5 * dof[k] - 0.5)
        series_below[k] = LGAMMA_SERIES_RATIO * 0.5 * (dof[k] - d + 1.0)
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
            # The term is second order in r, about (r (1 + q))^2, so below this
            # cut-off it is smaller than the rounding error of evaluating it.
            weight = r * (1.0 + q[i, k])
            if weight < NEGLIGIBLE_WEIGHT:
                continue
            if weight < SERIES_WEIGHT:
                qk = q[i, k]
                second = (nu * qk * qk / 4.0 - qk / 2.0 + multi_polygammas[1, k] / 8.0
                          + d / (4.0 * b * b) + nu * qk / (2.0 * b))
                third = (nu * qk * qk / (2.0 * b) + nu * qk * qk * qk / 6.0 - qk / (2.0 * b) - qk * qk / 4.0
                         - multi_polygammas[2, k] / 48.0 + d / (6.0 * b * b * b) + nu * qk / (2.0 * b * b))
                total += r * r * (second + r * third)
                continue
            # KL between the Wishart marginals, written with
            # ln|W'^-1 W| = ln(1 - c q) and tr(W'^-1 W) = D - c q.
            half = 0.5 * r
            if half < series_below[k]:
                multi_lgamma_step = _lgamma_step_series(half, multi_polygammas, k)
            else:
                multi_lgamma_step = (_multi_lgamma_downdate(0.5 * nu, half, dim, lgamma_half_dof[k],
                                                            lgamma_half_dof_minus_half[k])
                                     + half * multi_polygammas[0, k])
            kl_wishart = -0.5 * nu_new * math.log(one_minus) - 0.5 * nu * c * q[i, k] + multi_lgamma_step
            # E over Lambda of KL between the conditional Gaussians of mu;
            # (m - m')^T W (m - m') = r^2 q / beta'^2.
            kl_mean = 0.5 * (d * b_new / b - d - d * math.log(b_new / b) + nu * r * r * q[i, k] / b_new)
            total += kl_wishart + kl_mean
        out[i] = total
    return out


@njit(cache=True, parallel=True, nogil=True)
def dirichlet_downdate_kl(alpha, resp, polygammas, total_polygammas, improper):
    """KL(Dir(alpha) || Dir(alpha - r_i)) for every site, shape (N,).

    ``polygammas[n, k]`` is psi^(n)(alpha_k) and ``total_polygammas[n]`` is
    psi^(n)(sum alpha), for n = 0..4 (psi^(0) = psi). With
    phi(a, r) = ln Gamma(a - r) - ln Gamma(a) + r psi(a), the KL is
    sum_k phi(alpha_k, r_k) - phi(sum alpha, sum_k r_k). Where r / a is
    below LGAMMA_SERIES_RATIO, phi(a, r) is taken from its Taylor series,
    which needs no lgamma.
    """
    n, k_count = resp.shape
    total_alpha = 0.0
    lgamma_alpha = np.empty(k_count)
    series_below = np.empty(k_count)
    for k in range(k_count):
        total_alpha += alpha[k]
        lgamma_alpha[k] = math.lgamma(alpha[k])
        series_below[k] = LGAMMA_SERIES_RATIO * alpha[k]
    lgamma_total = math.lgamma(total_alpha)
    total_series_below = LGAMMA_SERIES_RATIO * total_alpha
    total_stats = np.ascontiguousarray(total_polygammas).reshape((total_polygammas.shape[0], 1))
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
            # Leaving out a tiny r changes the KL by O(r^2 + r / sum alpha),
            # which is far below the rounding error of the lgamma difference.
            if r < NEGLIGIBLE_WEIGHT:
                continue
            removed += r
            if r < series_below[k]:
                value += _lgamma_step_series(r, polygammas, k)
            else:
                value += math.lgamma(a_new) - lgamma_alpha[k] + r * polygammas[0, k]
        if bad or total_alpha - removed <= 0.0:
            improper[i] = True
            continue
        if removed < total_series_below:
            value -= _lgamma_step_series(removed, total_stats, 0)
        else:
            value -= math.lgamma(total_alpha - removed) - lgamma_total + removed * total_polygammas[0]
        out[i] = value
    return out


#: Below this value of r (1 + q), the LOO predictive density uses a
#: component's undivided Student-t term, which then agrees to rounding.
UNDIVIDED_WEIGHT = 1e-15

#: Rows per block in kernels that need a per-row scratch array of length K.
BLOCK_ROWS = 1024


@njit(cache=True)
def _undivided_constants(beta, dof, logdet_scale, alpha, d):
    """Per-component constants of the predictive term with nothing removed (r = 0)."""
    k_count = beta.shape[0]
    dim = int(d)
    log_norm_const = -0.5 * d * math.log(math.pi)
    constants = np.empty((3, k_count))
    for k in range(k_count):
        t_full = dof[k] + 1.0 - d
        constants[0, k] = beta[k] / (1.0 + beta[k])
        constants[1, k] = 0.5 * (t_full + d)
        constants[2, k] = (_lgamma_half_shift(0.5 * t_full, dim) + log_norm_const
                           + 0.5 * (d * math.log(constants[0, k]) + logdet_scale[k]) + math.log(alpha[k]))
    return constants


@njit(cache=True)
def _divided_log_terms(q_row, resp_row, beta, dof, logdet_scale, alpha, d, constants, terms):
    """ln(alpha'_k) + ln St_k(x_i) under the divided posterior for one site, into ``terms`` (K,).

    Returns the largest term. Where r (1 + q) < UNDIVIDED_WEIGHT the divided
    term differs from the undivided one by O(r (1 + q)) relative, below
    float64 rounding, so the undivided constants are used.
    """
    k_count = q_row.shape[0]
    dim = int(d)
    log_norm_const = -0.5 * d * math.log(math.pi)
    top = -np.inf
    for k in range(k_count):
        r = resp_row[k]
        if r * (1.0 + q_row[k]) < UNDIVIDED_WEIGHT:
            terms[k] = constants[2, k] - constants[1, k] * math.log1p(constants[0, k] * q_row[k])
        else:
            b_new = beta[k] - r
            nu_new = dof[k] - r
            c = beta[k] * r / b_new
            one_minus = 1.0 - c * q_row[k]
            t_dof = nu_new + 1.0 - d
            ratio = beta[k] / b_new
            mahal_w = ratio * ratio * q_row[k] / one_minus
            shrink = b_new / (1.0 + b_new)
            # delta2 / t = (precision scale / t) * mahal_w with precision scale = t * shrink.
            delta2_over_t = shrink * mahal_w
            # ln Gamma((t + D) / 2) - ln Gamma(t / 2) - (D / 2) ln(t pi) + ln|precision| / 2,
            # where ln|precision| = D ln(t shrink) + ln|W| - ln(1 - c q), so the ln t terms cancel.
            log_t = (_lgamma_half_shift(0.5 * t_dof, dim) + log_norm_const
                     + 0.5 * (d * math.log(shrink) + logdet_scale[k] - math.log(one_minus))
                     - 0.5 * (t_dof + d) * math.log1p(delta2_over_t))
            terms[k] = math.log(alpha[k] - r) + log_t
        if terms[k] > top:
            top = terms[k]
    return top


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
    total_alpha = alpha.sum()
    constants = _undivided_constants(beta, dof, logdet_scale, alpha, d)
    out = np.zeros(n)
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    for block in prange(n_blocks):
        terms = np.empty(k_count)
        for i in range(block * BLOCK_ROWS, min(n, (block + 1) * BLOCK_ROWS)):
            if improper[i]:
                continue
            top = _divided_log_terms(q[i], resp[i], beta, dof, logdet_scale, alpha, d, constants, terms)
            acc = 0.0
            removed = 0.0
            for k in range(k_count):
                acc += math.exp(terms[k] - top)
                removed += resp[i, k]
            out[i] = top + math.log(acc) - math.log(total_alpha - removed)
    return out


@njit(cache=True, parallel=True)
def mixture_loo_predictive_weights(q, resp, beta, dof, logdet_scale, alpha, d, improper):
    """Compute each component's share of the divided predictive density at x_i, shape (N, K).

    Row i is proportional to alpha'_k St_k(x_i) under the posterior without
    site i and sums to 1; rows of improper sites are 0.
    """
    n, k_count = q.shape
    constants = _undivided_constants(beta, dof, logdet_scale, alpha, d)
    out = np.zeros((n, k_count))
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    for block in prange(n_blocks):
        terms = np.empty(k_count)
        for i in range(block * BLOCK_ROWS, min(n, (block + 1) * BLOCK_ROWS)):
            if improper[i]:
                continue
            top = _divided_log_terms(q[i], resp[i], beta, dof, logdet_scale, alpha, d, constants, terms)
            acc = 0.0
            for k in range(k_count):
                terms[k] = math.exp(terms[k] - top)
                acc += terms[k]
            for k in range(k_count):
                out[i, k] = terms[k] / acc
    return out


@njit(cache=True, parallel=True)
def mean_shift_norm(q, resp, beta, dof):
    """max_k of sqrt(nu_k (r_ik / (beta_k - r_ik))^2 q_ik), shape (N,).

    This is the largest length, under E[Lambda_k] = nu_k W_k, of the shift
    -r u / (beta - r) of a component's posterior mean when site i is removed.
    """
    n, k_count = q.shape
    out = np.empty(n)
    for i in prange(n):
        top = -np.inf
        has_nan = False
        for k in range(k_count):
            ratio = resp[i, k] / (beta[k] - resp[i, k])
            value = math.sqrt(dof[k] * (ratio * ratio) * q[i, k])
            if value != value:
                has_nan = True
            elif value > top:
                top = value
        # numpy's max propagates NaN, and so does this kernel.
        out[i] = np.nan if has_nan else top
    return out
