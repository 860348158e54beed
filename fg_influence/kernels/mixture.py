"""Kernels for mixtures of Gaussians with Normal-Wishart components.

Notation: X is (N, D) data, resp is (N, K) responsibilities r_ik, and
component k has mean m_k, precision scaling beta_k, Wishart scale W_k with
lower Cholesky factor L_k (W_k = L_k L_k^T) and degrees of freedom nu_k.
Statistics are accumulated over fixed-size chunks of rows and the chunks
are added in order, so results do not depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: Rows per chunk for the reductions; fixed so sums are thread-count independent.
CHUNK_ROWS = 4096

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, parallel=True)
def quadratic_forms(X, means, scale_chol):
    """q_ik = (x_i - m_k)^T W_k (x_i - m_k) = ||L_k^T (x_i - m_k)||^2, shape (N, K)."""
    n, d = X.shape
    k_count = means.shape[0]
    out = np.empty((n, k_count))
    for i in prange(n):
        diff = np.empty(d)
        for k in range(k_count):
            for a in range(d):
                diff[a] = X[i, a] - means[k, a]
            total = 0.0
            # (L^T u)_b = sum_{a >= b} L[a, b] u[a]
            for b in range(d):
                acc = 0.0
                for a in range(b, d):
                    acc += scale_chol[k, a, b] * diff[a]
                total += acc * acc
            out[i, k] = total
    return out


@njit(cache=True, parallel=True)
def gaussian_expected_loglik(X, means, scale_chol, beta, dof, expected_logdet):
    """E_q[ln N(x_i | mu_k, Lambda_k^-1)] under a Normal-Wishart q, shape (N, K).

    Equals E[ln|Lambda_k|] / 2 - D ln(2 pi) / 2 - (D / beta_k + nu_k q_ik) / 2.
    """
    n, d = X.shape
    k_count = means.shape[0]
    out = np.empty((n, k_count))
    for i in prange(n):
        diff = np.empty(d)
        for k in range(k_count):
            for a in range(d):
                diff[a] = X[i, a] - means[k, a]
            quad = 0.0
            for b in range(d):
                acc = 0.0
                for a in range(b, d):
                    acc += scale_chol[k, a, b] * diff[a]
                quad += acc * acc
            out[i, k] = 0.5 * (expected_logdet[k] - d * _LOG_2PI - d / beta[k] - dof[k] * quad)
    return out


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
    """Weighted statistics sum_i r_ik (1, x_i, x_i x_i^T), each of shape (K,), (K, D), (K, D, D)."""
    n, d = X.shape
    k_count = resp.shape[1]
    n_chunks = (n + CHUNK_ROWS - 1) // CHUNK_ROWS
    part_counts = np.zeros((n_chunks, k_count))
    part_sums = np.zeros((n_chunks, k_count, d))
    part_outer = np.zeros((n_chunks, k_count, d, d))
    for c in prange(n_chunks):
        stop = min(n, (c + 1) * CHUNK_ROWS)
        for i in range(c * CHUNK_ROWS, stop):
            for k in range(k_count):
                r = resp[i, k]
                part_counts[c, k] += r
                for a in range(d):
                    rx = r * X[i, a]
                    part_sums[c, k, a] += rx
                    for b in range(a + 1):
                        part_outer[c, k, a, b] += rx * X[i, b]
    counts = np.zeros(k_count)
    sums = np.zeros((k_count, d))
    outer = np.zeros((k_count, d, d))
    for c in range(n_chunks):
        counts += part_counts[c]
        sums += part_sums[c]
        outer += part_outer[c]
    for k in range(k_count):
        for a in range(d):
            for b in range(a):
                outer[k, b, a] = outer[k, a, b]
    return counts, sums, outer
