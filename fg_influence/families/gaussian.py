"""Multivariate Gaussian distribution in mean-precision form."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array
from ._linalg import cholesky, inv_spd, logdet_from_cholesky, symmetrize
from .base import ExponentialFamily


class MultivariateNormal(ExponentialFamily):
    """Batch of Gaussians N(x | mean, precision^-1).

    Natural parameters ``(precision @ mean, -precision / 2)`` with sufficient
    statistics ``(x, x x^T)``; log-partition
    ``mean^T precision mean / 2 - ln|precision| / 2 + D ln(2 pi) / 2``.

    Parameters
    ----------
    mean : array_like, shape (..., D)
    precision : array_like, shape (..., D, D)
        Symmetric positive definite.
    """

    event_ndims = (1, 2)

    def __init__(self, mean, precision):
        mean = as_float_array(mean, "mean")
        precision = as_float_array(precision, "precision")
        if mean.ndim < 1 or precision.ndim < 2 or precision.shape[-2:] != (mean.shape[-1],) * 2:
            raise ValueError(
                f"precision must have shape (..., D, D) matching mean (..., D); got mean "
                f"{mean.shape} and precision {precision.shape}"
            )
        try:
            np.broadcast_shapes(mean.shape[:-1], precision.shape[:-2])
        except ValueError:
            raise ValueError(
                f"mean and precision must have broadcastable batch shapes, got mean "
                f"{mean.shape} and precision {precision.shape}"
            ) from None
        self._chol = cholesky(symmetrize(precision), "precision")
        self.mean = mean
        self.precision = symmetrize(precision)

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def natural_params(self):
        eta1 = np.einsum("...ij,...j->...i", self.precision, self.mean)
        return (eta1, -0.5 * self.precision)

    @classmethod
    def from_natural(cls, eta1, eta2):
        precision = -2.0 * np.asarray(eta2, dtype=float)
        covariance = inv_spd(symmetrize(precision), "precision (-2 eta2)")
        mean = np.einsum("...ij,...j->...i", covariance, eta1)
        return cls(mean, precision)

    def log_partition(self):
        quad = np.einsum("...i,...ij,...j->...", self.mean, self.precision, self.mean)
        return 0.5 * quad - 0.5 * logdet_from_cholesky(self._chol) + 0.5 * self.dim * np.log(2 * np.pi)

    def covariance(self) -> np.ndarray:
        return inv_spd(self.precision, "precision")

    def expected_stats(self):
        outer = self.covariance() + self.mean[..., :, None] * self.mean[..., None, :]
        return (self.mean.copy(), outer)

    def logpdf(self, x) -> np.ndarray:
        """Log density at points x of shape (..., D), broadcast against the batch."""
        x = np.asarray(x, dtype=float)
        # A scalar is accepted as one point when D = 1.
        if x.shape[-1:] != (self.dim,) and not (x.ndim == 0 and self.dim == 1):
            raise ValueError(f"x must have shape (..., {self.dim}) to match mean, got {x.shape}")
        diff = x - self.mean
        quad = np.einsum("...i,...ij,...j->...", diff, self.precision, diff)
        return 0.5 * logdet_from_cholesky(self._chol) - 0.5 * self.dim * np.log(2 * np.pi) - 0.5 * quad

    def sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``size`` samples, shape (size, ..., D)."""
        noise = rng.standard_normal((size,) + self.mean.shape)
        # x = mean + L^-T z has covariance (L L^T)^-1 = precision^-1.
        chol_t = np.swapaxes(self._chol, -1, -2)
        solved = np.linalg.solve(np.broadcast_to(chol_t, (size,) + chol_t.shape), noise[..., None])
        return self.mean + solved[..., 0]

    def mean_value(self):
        return self.mean

    def mode(self):
        return self.mean
