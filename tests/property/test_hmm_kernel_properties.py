"""Forward-backward against direct enumeration of every state path."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from fg_influence.kernels.hmm import forward_backward, pairwise_marginals


@st.composite
def chain_problems(draw):
    """Random log weights for a few short sequences with 1-3 states."""
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    scale = draw(st.floats(0.1, 60.0))
    rng = np.random.default_rng(seed)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    log_initial = rng.normal(size=k) * scale
    log_transition = rng.normal(size=(k, k)) * scale
    log_emission = rng.normal(size=(offsets[-1], k)) * scale
    use_initial = rng.random(len(lengths)) < 0.7
    return log_initial, log_transition, log_emission, offsets, use_initial


def enumerate_paths(log_initial, log_transition, rows, use_initial):
    """Log-normaliser, marginals and summed pair marginals by summing over all K^T paths."""
    length, k = rows.shape
    paths = list(itertools.product(range(k), repeat=length))
    scores = np.array([
        (log_initial[p[0]] if use_initial else 0.0)
        + sum(log_transition[p[t], p[t + 1]] for t in range(length - 1))
        + sum(rows[t, p[t]] for t in range(length))
        for p in paths
    ])
    log_norm = logsumexp(scores)
    weights = np.exp(scores - log_norm)
    gamma = np.zeros((length, k))
    pairs = np.zeros((max(length - 1, 0), k, k))
    for path, weight in zip(paths, weights):
        gamma[np.arange(length), path] += weight
        for t in range(length - 1):
            pairs[t, path[t], path[t + 1]] += weight
    return log_norm, gamma, pairs


@settings(max_examples=150, deadline=None)
@given(chain_problems())
def test_forward_backward_matches_enumeration(problem):
    log_initial, log_transition, log_emission, offsets, use_initial = problem
    gamma, initial, transitions, log_norm = forward_backward(
        log_initial, log_transition, log_emission, offsets, use_initial)
    for s in range(offsets.size - 1):
        rows = log_emission[offsets[s]:offsets[s + 1]]
        expected_norm, expected_gamma, expected_pairs = enumerate_paths(
            log_initial, log_transition, rows, use_initial[s])
        # Log weights reach |60 * 4| per term, so the log-normaliser is of
        # order 1e3 and its rounding of order 1e-12; marginals are in [0, 1].
        np.testing.assert_allclose(log_norm[s], expected_norm, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(gamma[offsets[s]:offsets[s + 1]], expected_gamma, atol=1e-10)
        np.testing.assert_allclose(initial[s], expected_gamma[0], atol=1e-10)
        np.testing.assert_allclose(transitions[s], expected_pairs.sum(axis=0), atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(chain_problems())
def test_pairwise_marginals_match_enumeration(problem):
    log_initial, log_transition, log_emission, offsets, use_initial = problem
    rows = np.ascontiguousarray(log_emission[offsets[0]:offsets[1]])
    gamma, pairs, log_norm = pairwise_marginals(log_initial, log_transition, rows, bool(use_initial[0]))
    expected_norm, expected_gamma, expected_pairs = enumerate_paths(
        log_initial, log_transition, rows, use_initial[0])
    # Same scales as above.
    np.testing.assert_allclose(log_norm, expected_norm, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(gamma, expected_gamma, atol=1e-10)
    np.testing.assert_allclose(pairs, expected_pairs, atol=1e-10)
