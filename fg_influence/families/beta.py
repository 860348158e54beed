"""Beta distribution on (0, 1)."""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, psi

from .._validation import as_float_array, check_positive
from .base import ExponentialFamily


class Beta(ExponentialFamily):
    """Batch of Beta(p | a, b) distributions, density proportional to ``p^(a-1) (1-p)^(b-1)``.

    Natural parameters ``(a - 1, b - 1)`` with sufficient statistics
    ``(ln p, ln(1 - p))``; log-partition ``ln B(a, b)``. It is the
    two-category Dirichlet, kept under its own name because a Bernoulli
    probability is one number, not a point on a simplex.

    Parameters
    ----------
    a, b : array_like, shape (...)
        Positive concentrations of the event p and of its complement.
    """

    event_ndims = (0, 0)

    def __init__(self, a, b):
        a = as_float_array(a, "a")
        b = as_float_array(b, "b")
        check_positive(a, "a")
        check_positive(b, "b")
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            raise ValueError(
                f"a and b must have broadcastable batch shapes, got {a.shape} and {b.shape}"
            ) from None
        self.a = a.copy()
        self.b = b.copy()

    def natural_params(self):
        return (self.a - 1.0, self.b - 1.0)

    @classmethod
    def from_natural(cls, eta1, eta2):
        return cls(np.asarray(eta1, dtype=float) + 1.0, np.asarray(eta2, dtype=float) + 1.0)

    def log_partition(self):
        return betaln(self.a, self.b)

    def expected_stats(self):
        total = psi(self.a + self.b)
        return (psi(self.a) - total, psi(self.b) - total)

    def mean(self) -> np.ndarray:
        return self.a / (self.a + self.b)

    def mode(self) -> np.ndarray:
        """(a - 1) / (a + b - 2); defined only when a > 1 and b > 1."""
        if np.any(self.a <= 1.0) or np.any(self.b <= 1.0):
            raise ValueError(
                "the Beta mode is defined only when a and b exceed 1, got minimum a "
                f"{self.a.min():.6g} and minimum b {self.b.min():.6g}; use mean() instead"
            )
        return (self.a - 1.0) / (self.a + self.b - 2.0)
