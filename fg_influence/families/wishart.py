"""Wishart distribution over symmetric positive definite matrices."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array
from ._linalg import (
    cholesky,
    inv_spd,
    logdet_from_cholesky,
    multivariate_digamma,
    multivariate_gammaln,
    symmetrize,
)
from .base import ExponentialFamily


class Wishart(ExponentialFamily):
    """Batch of Wishart distributions W(Lambda | scale, dof), with E[Lambda] = dof * scale.

    Natural parameters ``(-scale^-1 / 2, (dof - D - 1) / 2)`` with sufficient
    statistics ``(Lambda, ln|Lambda|)``; log-partition
    ``dof/2 ln|scale| + dof D/2 ln 2 + ln Gamma_D(dof / 2)``.

    Parameters
    ----------
    scale : array_like, shape (..., D, D)
        Symmetric positive definite scale matrix W.
    dof : array_like, shape (...)
        Degrees of freedom, greater than D - 1.
    """

    event_ndims = (2, 0)

    def __init__(self, scale, dof):
        scale = as_float_array(scale, "scale")
        dof = as_float_array(dof, "dof")
        if scale.ndim < 2 or scale.shape[-1] != scale.shape[-2]:
            raise ValueError(f"scale must have shape (..., D, D), got {scale.shape}")
        scale = symmetrize(scale)
        dim = scale.shape[-1]
        if dof.shape != scale.shape[:-2]:
            try:
                dof = np.broadcast_to(dof, scale.shape[:-2]).copy()
            except ValueError:
                raise ValueError(
                    f"dof must have the batch shape of scale {scale.shape[:-2]}, got {dof.shape}"
                ) from None
        if np.any(dof <= dim - 1):
            raise ValueError(
                f"dof must be greater than D - 1 = {dim - 1} for a proper Wishart, got "
                f"minimum {dof.min():.6g}"
            )
        self._chol = cholesky(scale, "scale")
        self.scale = scale
        self.dof = dof

    @property
    def dim(self) -> int:
        return self.scale.shape[-1]

    def logdet_scale(self) -> np.ndarray:
        return logdet_from_cholesky(self._chol)

    def natural_params(self):
        return (-0.5 * inv_spd(self.scale, "scale"), 0.5 * (self.dof - self.dim - 1.0))

    @classmethod
    def from_natural(cls, eta1, eta2):
        eta1 = np.asarray(eta1, dtype=float)
        dim = eta1.shape[-1]
        scale = inv_spd(symmetrize(-2.0 * eta1), "scale inverse (-2 eta1)")
        return cls(scale, 2.0 * np.asarray(eta2, dtype=float) + dim + 1.0)

    def log_partition(self):
        d = self.dim
        return (0.5 * self.dof * self.logdet_scale() + 0.5 * self.dof * d * np.log(2.0)
                + multivariate_gammaln(0.5 * self.dof, d))

    def expected_logdet(self) -> np.ndarray:
        """E[ln|Lambda|] = psi_D(dof / 2) + D ln 2 + ln|scale|."""
        return multivariate_digamma(0.5 * self.dof, self.dim) + self.dim * np.log(2.0) + self.logdet_scale()

    def expected_stats(self):
        return (self.mean(), self.expected_logdet())

    def mean(self):
        return self.dof[..., None, None] * self.scale

    def mode(self):
        """(dof - D - 1) * scale; defined only when dof >= D + 1."""
        if np.any(self.dof < self.dim + 1):
            raise ValueError(
                f"the Wishart mode is defined only when dof >= D + 1 = {self.dim + 1}, got "
                f"minimum {self.dof.min():.6g}; use mean() instead"
            )
        return (self.dof - self.dim - 1.0)[..., None, None] * self.scale
