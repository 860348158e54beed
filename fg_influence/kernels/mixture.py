"""Kernels for mixtures of Gaussians with Normal-Wishart components.

Notation: X is (N, D) data, resp is (N, K) responsibilities r_ik, and
component k has mean m_k, precision scaling beta_k, Wishart scale W_k with
lower Cholesky factor L_k (W_k = L_k L_k^T) and degrees of freedom nu_k.
Statistics are accumulated over fixed-size chunks of rows and the chunks
are added in order, so results do not depend on the number of threads.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit, prange

# libgomp's default wait policy spins at every barrier. On a machine with
# more runnable threads than cores, a spinning thread takes the core that
# its partner needs, and on 2 cores under load the parallel kernels ran
# 5 to 15 times slower than on one thread. Passive waiting sleeps instead.
# This sets the policy only when the user has not, and only takes effect if
# no OpenMP runtime was started in this process before this import.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

#: Rows per chunk for the reductions; fixed so sums are thread-count independent.
CHUNK_ROWS = 4096

_LOG_2PI = math.log(2.0 * math.pi)


#: Rows per block in the quadratic-form kernels: the inner loops run along
#: the rows of a block so that the compiler can vectorise them.
BLOCK_ROWS = 256


@njit(cache=True)
def _upper_factors(scale_chol):
    """Transposes L_k to U_k = L_k^T so that rows of U_k are contiguous."""
    k_count, d, _ = scale_chol.shape
    upper = np.zeros((k_count, d, d))
    for k in range(k_count):
        for a in range(d):
            for b in range(a + 1):
                upper[k, b, a] = scale_chol[k, a, b]
    return upper


@njit(cache=True)
def _block_quadratic_forms(X, start, stop, means, upper, k, diff_t, proj, total):
    """Set total[j] = ||U_k (x_{start+j} - m_k)||^2 for the rows of one block.

    ``diff_t`` (D, BLOCK_ROWS), ``proj`` and ``total`` (BLOCK_ROWS,) are
    scratch arrays owned by the caller. For each row the terms are added in
    the same order as a row-by-row loop (a ascending within b, b ascending).
    """
    d = X.shape[1]
    rows = stop - start
    for a in range(d):
        centre = means[k, a]
        for j in range(rows):
            diff_t[a, j] = X[start + j, a] - centre
    for j in range(rows):
        total[j] = 0.0
    for b in range(d):
        for j in range(rows):
            proj[j] = 0.0
        for a in range(b, d):
            coefficient = upper[k, b, a]
            for j in range(rows):
                proj[j] += coefficient * diff_t[a, j]
        for j in range(rows):
            total[j] += proj[j] * proj[j]


@njit(cache=True, parallel=True)
def quadratic_forms(X, means, scale_chol):
    """q_ik = (x_i - m_k)^T W_k (x_i - m_k) = ||L_k^T (x_i - m_k)||^2, shape (N, K)."""
    n, d = X.shape
    k_count = means.shape[0]
    upper = _upper_factors(scale_chol)
    out = np.empty((n, k_count))
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    for block in prange(n_blocks):
        start = block * BLOCK_ROWS
        stop = min(n, start + BLOCK_ROWS)
        diff_t = np.empty((d, BLOCK_ROWS))
        proj = np.empty(BLOCK_ROWS)
        total = np.empty(BLOCK_ROWS)
        for k in range(k_count):
            _block_quadratic_forms(X, start, stop, means, upper, k, diff_t, proj, total)
            for j in range(stop - start):
                out[start + j, k] = total[j]
    return out


@njit(cache=True, parallel=True)
def expected_loglik_from_quadratic_forms(q, beta, dof, expected_logdet, d):
    """E_q[ln N(x_i | mu_k, Lambda_k^-1)] from precomputed q_ik, shape (N, K); ``d`` is D as a float."""
    n, k_count = q.shape
    out = np.empty((n, k_count))
    for i in prange(n):
        for k in range(k_count):
            out[i, k] = 0.5 * (expected_logdet[k] - d * _LOG_2PI - d / beta[k] - dof[k] * q[i, k])
    return out


@njit(cache=True)
def gaussian_expected_loglik(X, means, scale_chol, beta, dof, expected_logdet):
    """E_q[ln N(x_i | mu_k, Lambda_k^-1)] under a Normal-Wishart q, shape (N, K).

    Equals E[ln|Lambda_k|] / 2 - D ln(2 pi) / 2 - (D / beta_k + nu_k q_ik) / 2.
    """
    q = quadratic_forms(X, means, scale_chol)
    return expected_loglik_from_quadratic_forms(q, beta, dof, expected_logdet, float(X.shape[1]))


@njit(cache=True, parallel=True)
def normalize_log_resp(logits):
    """Softmax of each row by log-sum-exp; returns (resp, log_norm)."""
    n, k_count = logits.shape
    resp = np.empty((n, k_count))
    log_norm = np.empty(n)
    for i in prange(n):
        top = logits[i, 0]
        for k in range(1, k_count):
            if logits[i, k] > top:
                top = logits[i, k]
        total = 0.0
        for k in range(k_count):
            total += math.exp(logits[i, k] - top)
        lse = top + math.log(total)
        log_norm[i] = lse
        for k in range(k_count):
            resp[i, k] = math.exp(logits[i, k] - lse)
    return resp, log_norm


@njit(cache=True, parallel=True)
def weighted_gaussian_stats(X, resp):
    """Weighted statistics sum_i r_ik (1, x_i, x_i x_i^T), each of shape (K,), (K, D), (K, D, D).

    Each row's D (D + 1) / 2 products x_ia x_ib (a >= b) are formed once and
    added to every component with weight r_ik, a contiguous loop that the
    compiler vectorises.
    """
    n, d = X.shape
    k_count = resp.shape[1]
    n_pairs = d * (d + 1) // 2
    n_chunks = (n + CHUNK_ROWS - 1) // CHUNK_ROWS
    part_counts = np.zeros((n_chunks, k_count))
    part_sums = np.zeros((n_chunks, k_count, d))
    part_outer = np.zeros((n_chunks, k_count, n_pairs))
    for c in prange(n_chunks):
        # Thread-private accumulators: writing the shared partial arrays row
        # by row made two threads slower than one.
        chunk_counts = np.zeros(k_count)
        chunk_sums = np.zeros((k_count, d))
        chunk_outer = np.zeros((k_count, n_pairs))
        products = np.empty(n_pairs)
        stop = min(n, (c + 1) * CHUNK_ROWS)
        for i in range(c * CHUNK_ROWS, stop):
            p = 0
            for a in range(d):
                for b in range(a + 1):
                    products[p] = X[i, a] * X[i, b]
                    p += 1
            for k in range(k_count):
                r = resp[i, k]
                chunk_counts[k] += r
                for a in range(d):
                    chunk_sums[k, a] += r * X[i, a]
                for p in range(n_pairs):
                    chunk_outer[k, p] += r * products[p]
        part_counts[c] = chunk_counts
        part_sums[c] = chunk_sums
        part_outer[c] = chunk_outer
    counts = np.zeros(k_count)
    sums = np.zeros((k_count, d))
    packed = np.zeros((k_count, n_pairs))
    for c in range(n_chunks):
        counts += part_counts[c]
        sums += part_sums[c]
        packed += part_outer[c]
    outer = np.zeros((k_count, d, d))
    for k in range(k_count):
        p = 0
        for a in range(d):
            for b in range(a + 1):
                outer[k, a, b] = packed[k, p]
                outer[k, b, a] = packed[k, p]
                p += 1
    return counts, sums, outer
