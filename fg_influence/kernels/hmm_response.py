"""Covariance of a hidden Markov chain's counts, by forward-mode differentiation of forward-backward.

For one sequence, q(z) = exp(<t(z), theta> - log Z(theta)), where t(z)
collects the chain's counts: the first state (K), the transitions (K x K)
and each state's emission statistics (K x Q), and theta the matching log
weights. The covariance of t(z) under q is the Hessian of log Z, that is
the derivative of the expected counts E_q[t] in theta. The kernel
propagates one tangent per coordinate of theta through the scaled
recursions of Rabiner (1989):

    a_t(j) = d log alpha_t(j) = de_t(j) + sum_i w_t(i, j) (a_{t-1}(i) + dlog A_ij),
    b_t(i) = d log beta_t(i)  = sum_j v_t(i, j) (dlog A_ij + de_{t+1}(j) + b_{t+1}(j)),

with w_t(i, j) proportional to alpha_{t-1}(i) A_ij (normalised over i) and
v_t(i, j) proportional to A_ij e_{t+1}(j) beta_{t+1}(j) (normalised over
j). The marginals then move by

    d gamma_t(j) = gamma_t(j) (a_t(j) + b_t(j) - m_t),
    d xi_t(i, j) = xi_t(i, j) (a_t(i) + dlog A_ij + de_{t+1}(j) + b_{t+1}(j) - m'_t),

where m_t and m'_t are the means of the brackets under gamma_t and xi_t
(the marginals sum to 1, so any constant added to a_t or b_t cancels).
Each tangent is therefore centred at every step, which keeps it of order 1
on long sequences. The cost is O(T K^2 P) per sequence for P = K + K^2 +
K Q tangents.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .hmm import _forward_backward_one


@njit(cache=True)
def _centre(tangent, weights):
    """Subtract from each column of ``tangent`` (K, P) its mean under ``weights`` (K,)."""
    k, p = tangent.shape
    for c in range(p):
        mean = 0.0
        for j in range(k):
            mean += weights[j] * tangent[j, c]
        for j in range(k):
            tangent[j, c] -= mean


@njit(cache=True)
def _add_emission_rows(out, features, row, gamma_row, forward, backward, scratch):
    """Add d(gamma_t(k) f_t) along every tangent to the emission rows of ``out``."""
    k, p = forward.shape
    q = features.shape[1]
    first = k + k * k
    for j in range(k):
        for c in range(p):
            scratch[j, c] = forward[j, c] + backward[j, c]
    _centre(scratch, gamma_row)
    for j in range(k):
        for r in range(q):
            value = features[row, r]
            if value == 0.0:
                continue
            scale = value * gamma_row[j]
            target = first + j * q + r
            for c in range(p):
                out[target, c] += scale * scratch[j, c]


@njit(cache=True)
def _add_sequence_covariance(log_initial, transition, log_emission, features, start, stop, use_initial,
                             out, gamma, initial_out, transitions_out, alpha, beta, scaled, norm,
                             forward, backward, backward_next, pair, xi, scratch):
    """Add Cov_q(t_s) of the sequence on rows start:stop to ``out`` (P, P).

    ``forward`` (T, K, P) contains the centred forward tangents a_t. The
    backward tangents need only two time steps, ``backward`` and
    ``backward_next`` (K, P). ``pair`` (K, K, P), ``xi`` (K, K) and ``scratch``
    (K, P) are work arrays. Coordinates: first state (K), transitions (K * K, row
    major), emission statistics (K * Q, state major).
    """
    k = transition.shape[0]
    q = features.shape[1]
    p = out.shape[0]
    first_transition = k
    first_emission = k + k * k
    length = stop - start
    _forward_backward_one(log_initial, transition, log_emission, start, stop, use_initial, gamma,
                          initial_out, transitions_out, alpha, beta, scaled, norm)

    # Forward tangents. At t = 0 the log weight of state j is theta_j (when
    # the sequence has an initial term) plus its emission term.
    for j in range(k):
        for c in range(p):
            forward[0, j, c] = 0.0
        if use_initial:
            forward[0, j, j] = 1.0
        for r in range(q):
            forward[0, j, first_emission + j * q + r] += features[start, r]
    _centre(forward[0], alpha[0])
    for t in range(1, length):
        row = start + t
        for j in range(k):
            for c in range(p):
                forward[t, j, c] = 0.0
            total = 0.0
            for i in range(k):
                total += alpha[t - 1, i] * transition[i, j]
            for i in range(k):
                w = alpha[t - 1, i] * transition[i, j] / total
                for c in range(p):
                    forward[t, j, c] += w * forward[t - 1, i, c]
                forward[t, j, first_transition + i * k + j] += w
            for r in range(q):
                forward[t, j, first_emission + j * q + r] += features[row, r]
        _centre(forward[t], alpha[t])

    # Backward tangents from b_{T-1} = 0, accumulating the moves of the
    # marginals of step t and of the pair (t, t + 1) on the way.
    for j in range(k):
        for c in range(p):
            backward_next[j, c] = 0.0
    _add_emission_rows(out, features, stop - 1, gamma[stop - 1], forward[length - 1], backward_next, scratch)
    for t in range(length - 2, -1, -1):
        row_next = start + t + 1
        for i in range(k):
            for c in range(p):
                backward[i, c] = 0.0
            total = 0.0
            for j in range(k):
                total += transition[i, j] * scaled[t + 1, j] * beta[t + 1, j]
            if total <= 0.0:
                continue
            for j in range(k):
                v = transition[i, j] * scaled[t + 1, j] * beta[t + 1, j] / total
                if v == 0.0:
                    continue
                for c in range(p):
                    backward[i, c] += v * backward_next[j, c]
                backward[i, first_transition + i * k + j] += v
                for r in range(q):
                    backward[i, first_emission + j * q + r] += v * features[row_next, r]
        _centre(backward, gamma[start + t])

        # Pair (t, t + 1): bracket u_ij = a_t(i) + dlog A_ij + de_{t+1}(j) + b_{t+1}(j).
        for i in range(k):
            for j in range(k):
                xi[i, j] = alpha[t, i] * transition[i, j] * scaled[t + 1, j] * beta[t + 1, j] / norm[t + 1]
        for c in range(p):
            mean = 0.0
            for i in range(k):
                for j in range(k):
                    value = forward[t, i, c] + backward_next[j, c]
                    pair[i, j, c] = value
                    mean += xi[i, j] * value
            # Direct terms: dlog A_ij along its own coordinate, de_{t+1}(j)
            # along state j's emission coordinates.
            if first_transition <= c < first_emission:
                i = (c - first_transition) // k
                j = (c - first_transition) % k
                pair[i, j, c] += 1.0
                mean += xi[i, j]
            elif c >= first_emission:
                j = (c - first_emission) // q
                value = features[row_next, (c - first_emission) % q]
                for i in range(k):
                    pair[i, j, c] += value
                mean += gamma[row_next, j] * value
            for i in range(k):
                for j in range(k):
                    pair[i, j, c] -= mean
        for i in range(k):
            for j in range(k):
                if xi[i, j] == 0.0:
                    continue
                target = first_transition + i * k + j
                for c in range(p):
                    out[target, c] += xi[i, j] * pair[i, j, c]

        _add_emission_rows(out, features, start + t, gamma[start + t], forward[t], backward, scratch)
        for i in range(k):
            for c in range(p):
                backward_next[i, c] = backward[i, c]

    # First state: d gamma_0(j), with b_0 now in backward_next.
    if use_initial:
        for j in range(k):
            for c in range(p):
                scratch[j, c] = forward[0, j, c] + backward_next[j, c]
        _centre(scratch, gamma[start])
        for j in range(k):
            for c in range(p):
                out[j, c] += gamma[start, j] * scratch[j, c]


@njit(cache=True)
def chain_statistics_covariance(log_initial, log_transition, log_emission, features, offsets, use_initial,
                                sequences):
    """Sum the covariances of the listed sequences' counts under q, shape (P, P).

    Parameters
    ----------
    log_initial : ndarray, shape (K,)
        E[ln pi], the log weights of the first state.
    log_transition : ndarray, shape (K, K)
        E[ln A], the log weights from state i (row) to state j (column).
    log_emission : ndarray, shape (n_rows, K)
        Log emission weight of each row under each state, linear in the
        emission coordinates of theta with the row's ``features``.
    features : ndarray, shape (n_rows, Q)
        Emission statistics of each row (already scaled by its emission
        weight), paired with each state's Q emission coordinates.
    offsets : ndarray of int64, shape (S + 1,)
    use_initial : ndarray of bool, shape (S,)
    sequences : ndarray of int64
        The sequences to sum over.

    Returns
    -------
    ndarray, shape (P, P), P = K + K^2 + K Q
        In the layout first state, transitions (row major), emission
        statistics (state major).
    """
    k = log_transition.shape[0]
    q = features.shape[1]
    p = k + k * k + k * q
    out = np.zeros((p, p))
    if sequences.shape[0] == 0:
        return out
    transition = np.exp(log_transition)
    longest = 0
    for s in sequences:
        longest = max(longest, offsets[s + 1] - offsets[s])
    gamma = np.empty((log_emission.shape[0], k))
    initial_out = np.empty(k)
    transitions_out = np.empty((k, k))
    alpha = np.empty((longest, k))
    beta = np.empty((longest, k))
    scaled = np.empty((longest, k))
    norm = np.empty(longest)
    forward = np.empty((longest, k, p))
    backward = np.empty((k, p))
    backward_next = np.empty((k, p))
    pair = np.empty((k, k, p))
    xi = np.empty((k, k))
    scratch = np.empty((k, p))
    for s in sequences:
        _add_sequence_covariance(log_initial, transition, log_emission, features, offsets[s], offsets[s + 1],
                                 use_initial[s], out, gamma, initial_out, transitions_out, alpha, beta, scaled,
                                 norm, forward, backward, backward_next, pair, xi, scratch)
    return out
