"""Forward-backward for hidden Markov chains stored as concatenated sequences.

The recursions are the scaled ones of Rabiner (1989): each forward vector
is normalised to sum to 1, and the log of the normalisers accumulates the
log-normaliser of the chain. Emission terms are shifted by their row
maximum before exponentiation, so very negative log-likelihoods do not
underflow.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _forward_backward_one(log_initial, transition, log_emission, start, stop, use_initial,
                          gamma, initial_out, transitions_out, alpha, beta, scaled, norm):
    """Forward-backward on rows start:stop; returns the sequence's log-normaliser.

    ``transition`` is exp(log transition weights), (K, K). ``alpha``,
    ``beta``, ``scaled`` (T, K) and ``norm`` (T,) are scratch arrays of at
    least the sequence length. Posterior marginals go to gamma[start:stop]
    and the summed pairwise marginals to ``transitions_out`` (K, K).
    """
    k = transition.shape[0]
    length = stop - start
    log_norm = 0.0
    for t in range(length):
        row = start + t
        shift = log_emission[row, 0]
        for j in range(1, k):
            if log_emission[row, j] > shift:
                shift = log_emission[row, j]
        for j in range(k):
            scaled[t, j] = np.exp(log_emission[row, j] - shift)
        total = 0.0
        if t == 0:
            first_shift = -np.inf
            if use_initial:
                for j in range(k):
                    if log_initial[j] > first_shift:
                        first_shift = log_initial[j]
            else:
                first_shift = 0.0
            for j in range(k):
                weight = np.exp(log_initial[j] - first_shift) if use_initial else 1.0
                alpha[0, j] = weight * scaled[0, j]
                total += alpha[0, j]
            shift += first_shift
        else:
            for j in range(k):
                value = 0.0
                for i in range(k):
                    value += alpha[t - 1, i] * transition[i, j]
                alpha[t, j] = value * scaled[t, j]
                total += alpha[t, j]
        norm[t] = total
        for j in range(k):
            alpha[t, j] /= total
        log_norm += np.log(total) + shift

    for j in range(k):
        beta[length - 1, j] = 1.0
    for t in range(length - 2, -1, -1):
        for i in range(k):
            value = 0.0
            for j in range(k):
                value += transition[i, j] * scaled[t + 1, j] * beta[t + 1, j]
            beta[t, i] = value / norm[t + 1]

    for t in range(length):
        for j in range(k):
            gamma[start + t, j] = alpha[t, j] * beta[t, j]
    for j in range(k):
        initial_out[j] = gamma[start, j]
    for i in range(k):
        for j in range(k):
            transitions_out[i, j] = 0.0
    for t in range(length - 1):
        for i in range(k):
            for j in range(k):
                transitions_out[i, j] += (alpha[t, i] * transition[i, j] * scaled[t + 1, j]
                                          * beta[t + 1, j] / norm[t + 1])
    return log_norm


@njit(cache=True)
def forward_backward(log_initial, log_transition, log_emission, offsets, use_initial):
    """Posterior marginals of every sequence's state chain.

    Parameters
    ----------
    log_initial : ndarray, shape (K,)
        Log weights of the first state (need not be normalised).
    log_transition : ndarray, shape (K, K)
        Log weights from state i (row) to state j (column).
    log_emission : ndarray, shape (n_rows, K)
        Log emission weight of each row under each state.
    offsets : ndarray of int64, shape (S + 1,)
        Sequence s owns rows offsets[s]:offsets[s + 1]; no sequence is empty.
    use_initial : ndarray of bool, shape (S,)
        False for a sequence whose first state has no initial term (weight 1
        for every state).

    Returns
    -------
    gamma : ndarray, shape (n_rows, K)
        q(z_t = k).
    initial : ndarray, shape (S, K)
        q(z_0 = k) of each sequence.
    transitions : ndarray, shape (S, K, K)
        Sum over t of q(z_t = i, z_{t+1} = j) for each sequence.
    log_norm : ndarray, shape (S,)
        Log of the sum over all state paths of the product of the weights.
    """
    n_sequences = offsets.shape[0] - 1
    k = log_transition.shape[0]
    transition = np.exp(log_transition)
    gamma = np.empty((log_emission.shape[0], k))
    initial = np.empty((n_sequences, k))
    transitions = np.empty((n_sequences, k, k))
    log_norm = np.empty(n_sequences)
    for s in range(n_sequences):
        start = offsets[s]
        stop = offsets[s + 1]
        length = stop - start
        alpha = np.empty((length, k))
        beta = np.empty((length, k))
        scaled = np.empty((length, k))
        norm = np.empty(length)
        log_norm[s] = _forward_backward_one(
            log_initial, transition, log_emission, start, stop, use_initial[s], gamma,
            initial[s], transitions[s], alpha, beta, scaled, norm,
        )
    return gamma, initial, transitions, log_norm


@njit(cache=True)
def pairwise_marginals(log_initial, log_transition, log_emission, use_initial):
    """Marginals of one sequence (all rows of ``log_emission``), step by step.

    Returns gamma (T, K), the pairwise marginals q(z_t = i, z_{t+1} = j)
    of each step, shape (T - 1, K, K), and the log-normaliser.
    """
    length, k = log_emission.shape
    transition = np.exp(log_transition)
    gamma = np.empty((length, k))
    initial = np.empty(k)
    summed = np.empty((k, k))
    alpha = np.empty((length, k))
    beta = np.empty((length, k))
    scaled = np.empty((length, k))
    norm = np.empty(length)
    log_norm = _forward_backward_one(log_initial, transition, log_emission, 0, length, use_initial,
                                     gamma, initial, summed, alpha, beta, scaled, norm)
    pairs = np.empty((max(length - 1, 0), k, k))
    for t in range(length - 1):
        for i in range(k):
            for j in range(k):
                pairs[t, i, j] = (alpha[t, i] * transition[i, j] * scaled[t + 1, j]
                                  * beta[t + 1, j] / norm[t + 1])
    return gamma, pairs, log_norm
