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


# The two kernels below run beside division's KL, which keeps the second
# core busy, so they take one thread: a parallel loop would wait for a
# worker thread to get that core (2.3 ms in place of 0.3 ms at G = 680).
@njit(cache=True)
def response_from_inverse(inverse):
    """Turn (I - B)^-1, stored in the upper triangle of ``inverse``, into R = (I - B)^-1 - I in place.

    Both triangles of the result contain R. The lower triangle on entry is ignored.
    """
    n = inverse.shape[0]
    for i in range(n):
        for j in range(i):
            inverse[i, j] = inverse[j, i]
        inverse[i, i] -= 1.0
    return inverse


@njit(cache=True)
def kl_form_from_square(response, square):
    """Return R + R^2 / 2 from symmetric R and from R^2 stored in the lower triangle of ``square``."""
    n = response.shape[0]
    out = np.empty_like(response)
    for i in range(n):
        for j in range(i + 1):
            out[i, j] = response[i, j] + 0.5 * square[i, j]
        for j in range(i + 1, n):
            out[i, j] = response[i, j] + 0.5 * square[j, i]
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


#: Floating-point flags of the pair kernels. Reassociation lets LLVM vectorise
#: their long sums and dot products, and changes the result only by rounding,
#: because only the order of the additions changes. NaN and infinity keep
#: their meaning.
_VECTORISE = {"reassoc", "contract"}


@njit(cache=True, fastmath=_VECTORISE)
def _fill_products(m, base, i, runs):
    """Fill ``m`` with the distinct products of row i of ``base``, run by run.

    ``m[0]`` is the empty product 1. Each row (start, source, length,
    column) of ``runs`` sets m[start + j] = base[i, column] * m[source + j]
    for j < length. In graded order (see the moment table), the products of
    one more factor ending in a given column are one such run.
    """
    m[0] = 1.0
    for r in range(runs.shape[0]):
        length = runs[r, 2]
        value = base[i, runs[r, 3]]
        # Slices let LLVM see that a run reads and writes disjoint stretches
        # of m, so that it vectorises the run (4 times faster than indexing).
        target = m[runs[r, 0]:runs[r, 0] + length]
        source = m[runs[r, 1]:runs[r, 1] + length]
        for j in range(length):
            target[j] = value * source[j]


@njit(cache=True, parallel=True)
def pair_activity(resp, tol, n_parts):
    """Find the pairs of categories k < l with r_ik r_il > tol at some site, and the sites with one.

    Returns ``(together, ambiguous)``. ``together`` has one (K, K)
    boolean array per part of the sites (one part per thread), set at
    [k, l] for such a pair, and the caller combines them. ``ambiguous``
    marks the sites that have such a pair.
    """
    n, k_count = resp.shape
    together = np.zeros((n_parts, k_count, k_count), dtype=np.bool_)
    ambiguous = np.zeros(n, dtype=np.bool_)
    for part in prange(n_parts):
        seen = together[part]
        active = np.empty(k_count, dtype=np.int64)
        values = np.empty(k_count)
        for i in range(part * n // n_parts, (part + 1) * n // n_parts):
            # Gather the categories above tol without branches, then test only their pairs.
            count = 0
            for k in range(k_count):
                r_k = resp[i, k]
                active[count] = k
                values[count] = r_k
                count += r_k > tol
            found = False
            for a in range(count):
                for b in range(a + 1, count):
                    if values[a] * values[b] > tol:
                        seen[active[a], active[b]] = True
                        found = True
            ambiguous[i] = found
    return together, ambiguous


@njit(cache=True, fastmath=_VECTORISE)
def _add_scaled4(target, a, b, c, d, wa, wb, wc, wd, length):
    """Add wa a + wb b + wc c + wd d to ``target``, reading and writing ``target`` once for all four."""
    for s in range(length):
        target[s] += wa * a[s] + wb * b[s] + wc * c[s] + wd * d[s]


@njit(cache=True, fastmath=_VECTORISE)
def _add_scaled(target, a, wa, length):
    for s in range(length):
        target[s] += wa * a[s]


@njit(cache=True, parallel=True, fastmath=_VECTORISE)
def pair_moment_sums(base, resp, rows, tol, pair_of, n_pairs, runs, n_monomials, n_parts, block):
    """Sums of r_ik r_il m_i over the sites i in ``rows``, one per pair k < l, in parts.

    Row i of ``base`` and of ``resp`` belong to site i. m_i contains the
    n_monomials distinct products of row i of ``base``, built from ``runs``
    (see _fill_products). A (site, pair) enters only where r_ik r_il > tol,
    and only pairs with ``pair_of[k, l] >= 0``, which gives the pair's
    index. The sites are split into ``n_parts`` runs summed separately, one
    per thread; the caller adds the parts.

    Returns ``(sums, together, ambiguous)``: the sums, shape (n_parts, P, S);
    for each part a (K, K) boolean array set at [k, l] where a pair entered;
    and, for the j-th site in ``rows``, whether some pair of it entered.

    Each thread takes its sites ``block`` at a time: it keeps their products,
    sorts their (site, pair) terms by pair, and adds four terms of a pair to
    its sum in one sweep. The sweep over a pair's sum, a load and a store per
    entry, then serves four terms instead of one.
    """
    n, k_count = rows.shape[0], resp.shape[1]
    out = np.zeros((n_parts, n_pairs, n_monomials))
    together = np.zeros((n_parts, k_count, k_count), dtype=np.bool_)
    ambiguous = np.zeros(n, dtype=np.bool_)
    max_terms = block * k_count * (k_count - 1) // 2
    for part in prange(n_parts):
        seen = together[part]
        products = np.empty((block, n_monomials))
        term_row = np.empty(max_terms, dtype=np.int64)
        term_pair = np.empty(max_terms, dtype=np.int64)
        term_weight = np.empty(max_terms)
        sorted_row = np.empty(max_terms, dtype=np.int64)
        sorted_weight = np.empty(max_terms)
        place = np.zeros(n_pairs, dtype=np.int64)
        touched = np.empty(n_pairs, dtype=np.int64)
        sums = out[part]
        stop = (part + 1) * n // n_parts
        for first in range(part * n // n_parts, stop, block):
            count = 0
            n_filled = 0
            for j in range(first, min(first + block, stop)):
                i = rows[j]
                filled = False
                for k in range(k_count):
                    r_k = resp[i, k]
                    if r_k <= tol:
                        continue
                    for l in range(k + 1, k_count):
                        weight = r_k * resp[i, l]
                        p = pair_of[k, l]
                        if weight <= tol or p < 0:
                            continue
                        if not filled:
                            _fill_products(products[n_filled], base, i, runs)
                            filled = True
                            n_filled += 1
                            ambiguous[j] = True
                        seen[k, l] = True
                        term_row[count] = n_filled - 1
                        term_pair[count] = p
                        term_weight[count] = weight
                        count += 1
            # Group the terms by pair, each pair's in their order, with a
            # counting sort over the pairs that have a term. ``place[p]`` counts
            # pair p's terms, then marks where they go, then where they end.
            n_touched = 0
            for t in range(count):
                p = term_pair[t]
                if place[p] == 0:
                    touched[n_touched] = p
                    n_touched += 1
                place[p] += 1
            at = 0
            for u in range(n_touched):
                p = touched[u]
                size = place[p]
                place[p] = at
                at += size
            for t in range(count):
                p = term_pair[t]
                sorted_row[place[p]] = term_row[t]
                sorted_weight[place[p]] = term_weight[t]
                place[p] += 1
            t = 0
            for u in range(n_touched):
                p = touched[u]
                target = sums[p]
                while t + 4 <= place[p]:
                    _add_scaled4(target, products[sorted_row[t]], products[sorted_row[t + 1]],
                                 products[sorted_row[t + 2]], products[sorted_row[t + 3]], sorted_weight[t],
                                 sorted_weight[t + 1], sorted_weight[t + 2], sorted_weight[t + 3], n_monomials)
                    t += 4
                while t < place[p]:
                    _add_scaled(target, products[sorted_row[t]], sorted_weight[t], n_monomials)
                    t += 1
                place[p] = 0
    return out, together, ambiguous


@njit(cache=True, fastmath=_VECTORISE)
def _dot(a, b, length):
    total = 0.0
    for s in range(length):
        total += a[s] * b[s]
    return total


@njit(cache=True, fastmath=_VECTORISE)
def _dot4(a, b, c, d, m, length):
    """Return the dot products of a, b, c and d with m, reading m once for all four."""
    ta = tb = tc = td = 0.0
    for s in range(length):
        value = m[s]
        ta += a[s] * value
        tb += b[s] * value
        tc += c[s] * value
        td += d[s] * value
    return ta, tb, tc, td


@njit(cache=True, parallel=True, fastmath=_VECTORISE)
def pair_quadratic_forms(base, resp, rows, tol, pair_of, coefficients, norm_slots, norm_values, runs, n_parts,
                         total, norms, resp_norms):
    """Evaluate, for the sites in ``rows``, a quadratic form in their messages.

    Row i of ``base`` and of ``resp`` belong to site i, and m_i contains the
    distinct products of row i of ``base`` (see _fill_products). For the
    j-th site i = rows[j]:

    * ``total[j]`` = sum over pairs k <= l with r_ik r_il > tol of
      r_ik r_il c_p . m_i, where p = ``pair_of[k, l]`` (-1 skips the pair)
      and ``coefficients[p]`` = c_p.
    * ``norms[j]`` = sum of ``norm_values * m_i[norm_slots]``.
    * ``resp_norms[j]`` = sum of r_ik^2 over k with r_ik > tol.

    The sites are split into ``n_parts`` runs, one per thread.
    """
    n, k_count = rows.shape[0], resp.shape[1]
    n_monomials = coefficients.shape[1]
    for part in prange(n_parts):
        m = np.empty(n_monomials)
        active = np.empty(k_count * (k_count + 1) // 2, dtype=np.int64)
        weights = np.empty(k_count * (k_count + 1) // 2)
        for j in range(part * n // n_parts, (part + 1) * n // n_parts):
            i = rows[j]
            _fill_products(m, base, i, runs)
            norm = 0.0
            for u in range(norm_slots.shape[0]):
                norm += norm_values[u] * m[norm_slots[u]]
            norms[j] = norm
            count = 0
            squares = 0.0
            for k in range(k_count):
                r_k = resp[i, k]
                if r_k <= tol:
                    continue
                squares += r_k * r_k
                for l in range(k, k_count):
                    weight = r_k * resp[i, l]
                    p = pair_of[k, l]
                    if weight > tol and p >= 0:
                        active[count] = p
                        weights[count] = weight
                        count += 1
            resp_norms[j] = squares
            # Four pairs at a time, so that one load of m_i serves four dot
            # products. The loads of m_i and c_p bound the speed of one product.
            value = 0.0
            start = 0
            while start + 4 <= count:
                a, b, c, d = _dot4(coefficients[active[start]], coefficients[active[start + 1]],
                                   coefficients[active[start + 2]], coefficients[active[start + 3]], m,
                                   n_monomials)
                value += (weights[start] * a + weights[start + 1] * b + weights[start + 2] * c
                          + weights[start + 3] * d)
                start += 4
            for u in range(start, count):
                value += weights[u] * _dot(coefficients[active[u]], m, n_monomials)
            total[j] = value


@njit(cache=True, parallel=True, fastmath=_VECTORISE)
def pair_linear_parts(base, resp, tol, linear, own_slots, own_values, owner, small_of, runs, n_products, n_parts,
                      small):
    """Sum, for every site, y e + e^2 / 2 over the outputs of each smaller block.

    For site i and output o, e = sum over l with r_il > tol of
    r_il ``linear[l, o]`` . m_i and y = r_ik times the sum of
    ``own_values[o] * m_i[own_slots[o]]``, with k = ``owner[o]`` (0 if
    r_ik <= tol). ``small[i, small_of[o]]`` sums y e + e^2 / 2. Only the
    first L = ``linear.shape[2]`` products m_i enter, and ``runs`` fills
    the first ``n_products`` >= L of them (see _fill_products).
    """
    n, k_count = resp.shape
    n_outputs, n_linear = linear.shape[1], linear.shape[2]
    for part in prange(n_parts):
        m = np.empty(n_products)
        e = np.empty(n_outputs)
        for i in range(part * n // n_parts, (part + 1) * n // n_parts):
            _fill_products(m, base, i, runs)
            e[:] = 0.0
            for k in range(k_count):
                r_k = resp[i, k]
                if r_k <= tol:
                    continue
                block = linear[k]
                for o in range(n_outputs):
                    e[o] += r_k * _dot(block[o], m, n_linear)
            for c in range(small.shape[1]):
                small[i, c] = 0.0
            for o in range(n_outputs):
                r_own = resp[i, owner[o]]
                y = 0.0
                if r_own > tol:
                    for u in range(own_slots.shape[1]):
                        y += own_values[o, u] * m[own_slots[o, u]]
                    y *= r_own
                small[i, small_of[o]] += y * e[o] + 0.5 * e[o] * e[o]
