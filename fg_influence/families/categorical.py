"""Categorical distribution over K categories."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from .._validation import as_float_array
from .base import ExponentialFamily


class Categorical(ExponentialFamily):
    """Batch of categorical distributions with probabilities ``probs``.

    Natural parameter: the log-probabilities (defined up to a constant),
    with the one-hot indicator as sufficient statistic and log-partition
    ``logsumexp(eta)``.

    Parameters
    ----------
    probs : array_like, shape (..., K)
        Probabilities; each row must be non-negative and sum to one.
    """

    event_ndims = (1,)

    def __init__(self, probs):
        probs = as_float_array(probs, "probs")
        if probs.ndim < 1:
            raise ValueError(f"probs must have a last axis of categories, got shape {probs.shape}")
        if np.any(probs < 0) or not np.allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=1e-9):
            raise ValueError("probs must be non-negative and sum to 1 along the last axis")
        self.probs = probs

    def natural_params(self):
        with np.errstate(divide="ignore"):
            return (np.log(self.probs),)

    @classmethod
    def from_natural(cls, eta):
        return cls(softmax(np.asarray(eta, dtype=float), axis=-1))

    def log_partition(self):
        return logsumexp(self.natural_params()[0], axis=-1)

    def expected_stats(self):
        return (self.probs,)

    def entropy(self):
        # 0 ln 0 = 0 for categories with zero probability.
        p = self.probs
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        return -terms.sum(axis=-1)

    def kl(self, other):
        if not isinstance(other, Categorical):
            raise TypeError(f"kl needs two Categorical distributions, got {type(other).__name__}")
        p, q = self.probs, other.probs
        if np.any((p > 0) & (q == 0)):
            raise ValueError("KL(p || q) is infinite: q gives zero probability where p does not")
        safe_p = np.where(p > 0, p, 1.0)
        safe_q = np.where(p > 0, q, 1.0)
        return np.maximum((p * (np.log(safe_p) - np.log(safe_q))).sum(axis=-1), 0.0)

    def mean(self):
        return self.probs

    def mode(self):
        """Index of the most probable category, shape (...)."""
        return np.argmax(self.probs, axis=-1)
