"""Gamma distribution with shape-rate parametrisation."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, psi

from .._validation import as_float_array, check_positive
from .base import ExponentialFamily


class Gamma(ExponentialFamily):
    """Batch of Gamma(x | shape, rate) distributions, density proportional to
    ``x^(shape - 1) exp(-rate x)``.

    Natural parameters ``(shape - 1, -rate)`` with sufficient statistics
    ``(ln x, x)``; log-partition ``ln Gamma(shape) - shape ln(rate)``.
    """

    event_ndims = (0, 0)

    def __init__(self, shape, rate):
        shape = as_float_array(shape, "shape")
        rate = as_float_array(rate, "rate")
        check_positive(shape, "shape")
        check_positive(rate, "rate")
        try:
            self.shape, self.rate = np.broadcast_arrays(shape, rate)
        except ValueError:
            raise ValueError(
                f"shape and rate must have broadcastable batch shapes, got {shape.shape} "
                f"and {rate.shape}"
            ) from None
        self.shape = self.shape.copy()
        self.rate = self.rate.copy()

    def natural_params(self):
        return (self.shape - 1.0, -self.rate)

    @classmethod
    def from_natural(cls, eta1, eta2):
        return cls(np.asarray(eta1, dtype=float) + 1.0, -np.asarray(eta2, dtype=float))

    def log_partition(self):
        return gammaln(self.shape) - self.shape * np.log(self.rate)

    def expected_stats(self):
        return (psi(self.shape) - np.log(self.rate), self.shape / self.rate)

    def mean(self):
        return self.shape / self.rate

    def mode(self):
        """(shape - 1) / rate for shape >= 1, else 0 (the density peaks at the boundary)."""
        return np.maximum(self.shape - 1.0, 0.0) / self.rate
