"""Batched linear algebra shared by the matrix-valued families."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, polygamma, psi


def symmetrize(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (matrix + np.swapaxes(matrix, -1, -2))


def cholesky(matrix: np.ndarray, name: str) -> np.ndarray:
    """Lower Cholesky factor of a batch of symmetric positive definite matrices."""
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{name} must be symmetric positive definite; at least one matrix "
            f"in the batch is not"
        ) from None


def logdet_from_cholesky(chol: np.ndarray) -> np.ndarray:
    return 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)


def inv_spd(matrix: np.ndarray, name: str) -> np.ndarray:
    chol = cholesky(matrix, name)
    identity = np.broadcast_to(np.eye(matrix.shape[-1]), matrix.shape)
    inv_chol = np.linalg.solve(chol, identity)
    return np.swapaxes(inv_chol, -1, -2) @ inv_chol


def multivariate_digamma(a: np.ndarray, dim: int) -> np.ndarray:
    """psi_D(a) = sum_{j=1..D} psi(a + (1 - j) / 2)."""
    a = np.asarray(a, dtype=float)
    offsets = (1.0 - np.arange(1, dim + 1)) / 2.0
    return psi(a[..., None] + offsets).sum(axis=-1)


def multivariate_polygamma(order: int, a: np.ndarray, dim: int) -> np.ndarray:
    """Return psi_D^(order)(a) = sum_{j=1..D} psi^(order)(a + (1 - j) / 2), a derivative of psi_D."""
    a = np.asarray(a, dtype=float)
    offsets = (1.0 - np.arange(1, dim + 1)) / 2.0
    return polygamma(order, a[..., None] + offsets).sum(axis=-1)


def multivariate_polygammas(a: np.ndarray, dim: int, max_order: int = 4) -> np.ndarray:
    """Return psi_D^(n)(a) for n = 0..max_order (psi_D^(0) = psi_D), shape (max_order + 1,) + a.shape."""
    return np.stack([multivariate_polygamma(order, a, dim) for order in range(max_order + 1)])


def multivariate_gammaln(a: np.ndarray, dim: int) -> np.ndarray:
    """ln Gamma_D(a) = D (D - 1) / 4 ln(pi) + sum_{j=1..D} ln Gamma(a + (1 - j) / 2)."""
    a = np.asarray(a, dtype=float)
    offsets = (1.0 - np.arange(1, dim + 1)) / 2.0
    constant = dim * (dim - 1) / 4.0 * np.log(np.pi)
    return constant + gammaln(a[..., None] + offsets).sum(axis=-1)
