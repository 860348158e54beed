"""Normal-Wishart distribution over a Gaussian's mean and precision."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_positive
from ._linalg import (
    inv_spd,
    symmetrize,
)
from .base import ExponentialFamily
from .wishart import Wishart


class NormalWishart(ExponentialFamily):
    """Batch of NW(mu, Lambda | mean, beta, scale, dof) distributions.

    ``Lambda ~ Wishart(scale, dof)`` and ``mu | Lambda ~ N(mean, (beta Lambda)^-1)``.

    Natural parameters and their sufficient statistics, in this order:

    ========================  ==========================
    natural parameter         sufficient statistic
    ========================  ==========================
    ``beta * mean``           ``Lambda mu``
    ``beta``                  ``-mu^T Lambda mu / 2``
    ``scale^-1 + beta m m^T`` ``-Lambda / 2``
    ``dof - D``               ``ln|Lambda| / 2``
    ========================  ==========================

    In these coordinates a Gaussian observation x with weight r adds
    ``r * (x, 1, x x^T, 1)``, so the natural parameters double as the
    additive "count" coordinates used for site messages.

    Parameters
    ----------
    mean : array_like, shape (..., D)
    beta : array_like, shape (...)
        Positive scaling of the precision of mu.
    scale : array_like, shape (..., D, D)
        Symmetric positive definite Wishart scale W.
    dof : array_like, shape (...)
        Degrees of freedom, greater than D - 1.
    """

    event_ndims = (1, 0, 2, 0)

    def __init__(self, mean, beta, scale, dof):
        mean = as_float_array(mean, "mean")
        beta = as_float_array(beta, "beta")
        if mean.ndim < 1:
            raise ValueError(f"mean must have shape (..., D), got {mean.shape}")
        batch = mean.shape[:-1]
        try:
            beta = np.broadcast_to(beta, batch).copy()
        except ValueError:
            raise ValueError(f"beta must have the batch shape {batch}, got {beta.shape}") from None
        check_positive(beta, "beta")
        scale = as_float_array(scale, "scale")
        if scale.shape != batch + (mean.shape[-1],) * 2:
            raise ValueError(
                f"scale must have shape {batch + (mean.shape[-1],) * 2} to match mean "
                f"{mean.shape}, got {scale.shape}"
            )
        dof = as_float_array(dof, "dof")
        try:
            dof = np.broadcast_to(dof, batch)
        except ValueError:
            raise ValueError(f"dof must have the batch shape {batch}, got {dof.shape}") from None
        self.wishart = Wishart(scale, dof)
        self.mean = mean
        self.beta = beta

    @property
    def scale(self) -> np.ndarray:
        return self.wishart.scale

    @property
    def dof(self) -> np.ndarray:
        return self.wishart.dof

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def natural_params(self):
        beta = self.beta
        outer = self.mean[..., :, None] * self.mean[..., None, :]
        psi_matrix = inv_spd(self.scale, "scale") + beta[..., None, None] * outer
        return (beta[..., None] * self.mean, beta.copy(), psi_matrix, self.dof - self.dim)

    @classmethod
    def from_natural(cls, weighted_mean, beta, psi_matrix, dof_offset):
        """Build from natural (count) parameters; raises ValueError if they are improper."""
        weighted_mean = np.asarray(weighted_mean, dtype=float)
        beta = np.asarray(beta, dtype=float)
        psi_matrix = np.asarray(psi_matrix, dtype=float)
        dim = weighted_mean.shape[-1]
        if np.any(beta <= 0):
            raise ValueError(
                f"improper Normal-Wishart: beta must be positive, got minimum {beta.min():.6g}"
            )
        mean = weighted_mean / beta[..., None]
        scale_inverse = psi_matrix - beta[..., None, None] * mean[..., :, None] * mean[..., None, :]
        scale = inv_spd(symmetrize(scale_inverse), "scale inverse (psi - beta m m^T)")
        return cls(mean, beta, scale, np.asarray(dof_offset, dtype=float) + dim)

    def log_partition(self):
        d = self.dim
        return (-0.5 * d * np.log(self.beta) + 0.5 * d * np.log(2 * np.pi)
                + self.wishart.log_partition())

    def expected_quadratic(self, x) -> np.ndarray:
        """E[(x - mu)^T Lambda (x - mu)] = D / beta + dof (x - mean)^T scale (x - mean)."""
        diff = np.asarray(x, dtype=float) - self.mean
        quad = np.einsum("...i,...ij,...j->...", diff, self.scale, diff)
        return self.dim / self.beta + self.dof * quad

    def expected_stats(self):
        scale_mean = np.einsum("...ij,...j->...i", self.scale, self.mean)
        quad = np.einsum("...i,...i->...", self.mean, scale_mean)
        return (
            self.dof[..., None] * scale_mean,
            -0.5 * (self.dim / self.beta + self.dof * quad),
            -0.5 * self.wishart.mean(),
            0.5 * self.wishart.expected_logdet(),
        )

    def mean_value(self) -> tuple[np.ndarray, np.ndarray]:
        """(E[mu], E[Lambda])."""
        return self.mean, self.wishart.mean()

    def mode(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, (dof - D) scale), the joint mode; needs dof > D."""
        if np.any(self.dof <= self.dim):
            raise ValueError(
                f"the Normal-Wishart mode is defined only when dof > D = {self.dim}, got "
                f"minimum {self.dof.min():.6g}"
            )
        return self.mean, (self.dof - self.dim)[..., None, None] * self.scale

    def sample(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw (mu, Lambda) pairs for a single-element batch-free distribution."""
        from scipy.stats import wishart as scipy_wishart

        if self.mean.ndim != 1:
            raise ValueError("sample supports a single Normal-Wishart (no batch axes)")
        precisions = scipy_wishart(df=float(self.dof), scale=self.scale).rvs(size=size, random_state=rng)
        precisions = precisions.reshape(size, self.dim, self.dim)
        chol = np.linalg.cholesky(self.beta * precisions)
        noise = rng.standard_normal((size, self.dim))
        means = self.mean + np.linalg.solve(np.swapaxes(chol, -1, -2), noise[..., None])[..., 0]
        return means, precisions
