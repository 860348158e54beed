"""Normal-Gamma distribution over regression coefficients and a noise precision."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, psi

from .._validation import as_float_array, check_positive
from ._linalg import cholesky, inv_spd, logdet_from_cholesky, symmetrize
from .base import ExponentialFamily


class NormalGamma(ExponentialFamily):
    """Batch of Normal-Gamma distributions NG(w, tau | mean, precision, shape, rate).

    ``tau ~ Gamma(shape, rate)`` and ``w | tau ~ N(mean, (tau precision)^-1)``,
    with w of dimension D. With D = 1 and ``precision = beta`` this is the
    scalar Normal-Gamma of a Gaussian's mean and precision, the one-dimensional
    Normal-Wishart.

    Natural parameters and their sufficient statistics, in this order:

    ================================================  ===================
    natural parameter                                 sufficient statistic
    ================================================  ===================
    ``precision @ mean``                              ``tau w``
    ``-precision / 2``                                ``tau w w^T``
    ``-(rate + mean^T precision mean / 2)``           ``tau``
    ``shape - 1 + D / 2``                             ``ln tau``
    ================================================  ===================

    A Gaussian observation y ~ N(x^T w, 1 / tau) with weight r adds
    ``r * (y x, -x x^T / 2, -y^2 / 2, 1 / 2)``. The log-partition is
    ``-ln|precision| / 2 + D ln(2 pi) / 2 + ln Gamma(shape) - shape ln(rate)``.

    Parameters
    ----------
    mean : array_like, shape (..., D)
    precision : array_like, shape (..., D, D)
        Symmetric positive definite precision of w relative to tau.
    shape : array_like, shape (...)
        Positive shape of the Gamma distribution of tau.
    rate : array_like, shape (...)
        Positive rate of the Gamma distribution of tau.
    """

    event_ndims = (1, 2, 0, 0)

    def __init__(self, mean, precision, shape, rate):
        mean = as_float_array(mean, "mean")
        precision = as_float_array(precision, "precision")
        shape = as_float_array(shape, "shape")
        rate = as_float_array(rate, "rate")
        if mean.ndim < 1 or precision.ndim < 2 or precision.shape[-2:] != (mean.shape[-1],) * 2:
            raise ValueError(
                f"precision must have shape (..., D, D) matching mean (..., D); got mean "
                f"{mean.shape} and precision {precision.shape}"
            )
        batch = mean.shape[:-1]
        try:
            precision = np.broadcast_to(precision, batch + precision.shape[-2:]).copy()
            shape = np.broadcast_to(shape, batch).copy()
            rate = np.broadcast_to(rate, batch).copy()
        except ValueError:
            raise ValueError(
                f"precision, shape and rate must broadcast to the batch shape {batch} of mean, got "
                f"{precision.shape}, {shape.shape} and {rate.shape}"
            ) from None
        check_positive(shape, "shape")
        check_positive(rate, "rate")
        self._chol = cholesky(symmetrize(precision), "precision")
        self.mean = mean
        self.precision = symmetrize(precision)
        self.shape = shape
        self.rate = rate

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def natural_params(self):
        weighted = np.einsum("...ij,...j->...i", self.precision, self.mean)
        quad = np.einsum("...i,...i->...", self.mean, weighted)
        return (weighted, -0.5 * self.precision, -(self.rate + 0.5 * quad), self.shape - 1.0 + 0.5 * self.dim)

    @classmethod
    def from_natural(cls, eta1, eta2, eta3, eta4):
        eta1 = np.asarray(eta1, dtype=float)
        precision = symmetrize(-2.0 * np.asarray(eta2, dtype=float))
        covariance = inv_spd(precision, "precision (-2 eta2)")
        mean = np.einsum("...ij,...j->...i", covariance, eta1)
        quad = np.einsum("...i,...i->...", mean, eta1)
        rate = -np.asarray(eta3, dtype=float) - 0.5 * quad
        shape = np.asarray(eta4, dtype=float) + 1.0 - 0.5 * eta1.shape[-1]
        return cls(mean, precision, shape, rate)

    def log_partition(self):
        return (
            -0.5 * logdet_from_cholesky(self._chol)
            + 0.5 * self.dim * np.log(2.0 * np.pi)
            + gammaln(self.shape)
            - self.shape * np.log(self.rate)
        )

    def expected_precision(self) -> np.ndarray:
        """E[tau] = shape / rate, shape (...)."""
        return self.shape / self.rate

    def expected_log_precision(self) -> np.ndarray:
        """E[ln tau] = psi(shape) - ln(rate), shape (...)."""
        return psi(self.shape) - np.log(self.rate)

    def expected_stats(self):
        tau = self.expected_precision()
        covariance = inv_spd(self.precision, "precision")
        outer = covariance + tau[..., None, None] * self.mean[..., :, None] * self.mean[..., None, :]
        return (tau[..., None] * self.mean, outer, tau, self.expected_log_precision())

    def mean_value(self) -> tuple[np.ndarray, np.ndarray]:
        """(E[w], E[tau]), shapes (..., D) and (...)."""
        return self.mean.copy(), self.expected_precision()

    def mode(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint mode (w, tau) = (mean, max(shape - 1 + D / 2, 0) / rate)."""
        return self.mean.copy(), np.maximum(self.shape - 1.0 + 0.5 * self.dim, 0.0) / self.rate

    def coefficient_covariance(self) -> np.ndarray:
        """Covariance of the marginal Student-t of w, rate / (shape - 1) precision^-1, for shape > 1."""
        if np.any(self.shape <= 1.0):
            raise ValueError(
                "the marginal covariance of w is finite only when shape exceeds 1, got minimum "
                f"shape {self.shape.min():.6g}; use more data or a larger prior shape"
            )
        scale = self.rate / (self.shape - 1.0)
        return scale[..., None, None] * inv_spd(self.precision, "precision")

    def logpdf(self, w, tau) -> np.ndarray:
        """Log density at coefficients w (..., D) and precision tau (...), broadcast against the batch."""
        w = np.asarray(w, dtype=float)
        tau = np.asarray(tau, dtype=float)
        diff = w - self.mean
        quad = np.einsum("...i,...ij,...j->...", diff, self.precision, diff)
        gaussian = (
            0.5 * self.dim * np.log(tau) + 0.5 * logdet_from_cholesky(self._chol)
            - 0.5 * self.dim * np.log(2.0 * np.pi) - 0.5 * tau * quad
        )
        gamma = self.shape * np.log(self.rate) - gammaln(self.shape) + (self.shape - 1.0) * np.log(tau) - self.rate * tau
        return gaussian + gamma
